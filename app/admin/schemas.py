"""Request and response models of the admin API; they validate requests and feed the OpenAPI document."""

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictStr


class UserUpdateIn(BaseModel):
    """Fields to change on a user; fields left out stay as they are."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: str | None = Field(None, max_length=120)
    email: str | None = Field(None, max_length=254)
    is_admin: bool | None = None
    active: bool | None = Field(None, description="false deactivates the user; their sessions and keys fail at once.")


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    is_admin: bool
    active: bool
    created_at: datetime


class UserPage(BaseModel):
    data: list[UserOut]
    total: int = Field(description="Users matching the filters, on every page together.")
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


class UserDetailOut(UserOut):
    organizations: list[dict]
    sessions: list[dict]
    api_keys: list[dict]
    usage: dict
    audit: list[dict]


class UserDeletedOut(BaseModel):
    deleted_user_id: int
    organizations_deleted: list[dict]
    organizations_kept: list[dict]


class MaintenanceIn(BaseModel):
    # Not strict as a whole: JSON has no datetime type, and ends_at arrives as an ISO 8601 string.
    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool
    message: StrictStr = Field("", max_length=500, description="Shown on every page; a default text when empty.")
    ends_at: AwareDatetime | None = Field(
        None, description="The announced end, ISO 8601 with an offset; sets Retry-After. It does not end maintenance."
    )


class MaintenanceOut(BaseModel):
    enabled: bool
    message: str | None = None
    started_at: datetime | None = None
    ends_at: datetime | None = None
    started_by: str | None = None


class StatsOut(BaseModel):
    days: int
    totals: dict
    series: list[dict]


class QueuesOut(BaseModel):
    queues: list[dict]
    workers: list[dict]


class FailedJobPage(BaseModel):
    data: list[dict]
    total: int
    next_cursor: str | None


class CountOut(BaseModel):
    count: int
