"""The operator console's files: `static/` holds the page (`index.html`, `console.js`, `console.css`), a
hand-written single-page app with no build step, served by `fastdtm.api.admin_ui` (docs/console.md)."""
