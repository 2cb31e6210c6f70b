"""The API's routes, one module per resource; each is an APIRouter included by api/app.py."""
