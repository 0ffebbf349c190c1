"""The UI's routes by resource, each an APIRouter built over the shared UI context: runs (list, create, events,
stop, resume), data (files, upload, preview, check), chat, eval, export, pages (the HTML)."""
