"""Placeholder: being built."""

import streamlit as st

st.title("jobs")
st.info("This page is being built.")
