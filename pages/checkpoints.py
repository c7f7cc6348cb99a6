"""Placeholder: being built."""

import streamlit as st

st.title("checkpoints")
st.info("This page is being built.")
