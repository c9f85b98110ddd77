"""The API's error type. Every error body is {"error": {"code", "message", "details"}}."""

from app.errors import ServiceError


class ApiError(ServiceError):
    def __init__(self, status, code, message, details=None):
        super().__init__(message, details)
        self.status = status
        self.code = code


def pydantic_details(error):
    """Turn a pydantic ValidationError into a list of {field, message} entries."""
    details = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"])
        details.append({"field": field, "message": item["msg"]})
    return details
