"""`uvicorn tests.apps.hello_main:app`: the hello app as a process would load it."""

from tests.apps.hello import build_app

app = build_app()
