"""The studio's web pages: views (`views/`), what each page shows (`pages`), forms, URLs,
HTTP helpers (`http`) and sign-in throttling (`login_throttle`)."""
