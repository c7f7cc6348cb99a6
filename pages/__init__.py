"""Dashboard pages (one file per screen) and the widgets they share (``common``)."""
