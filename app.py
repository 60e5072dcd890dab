"""Casting inspection: the Gradio app (a Hugging Face Space). Run ``python app.py`` and open http://localhost:7860.

The design card's UI entry point: :func:`build_demo` (the Blocks around a handler) lives in
:mod:`inspectkit.ui.app` (also ``inspectkit app``); this file is the door a Space runs."""

from inspectkit.ui.app import CSS, build_demo, example_images, launch_options, main  # noqa: F401 (the door's names)

if __name__ == "__main__":
    main()
