"""Gradio front end: layout and callbacks over rrg_core (nothing in rrg_core imports this)."""
