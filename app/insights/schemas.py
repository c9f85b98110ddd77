"""Response models of the insights API; the same models describe the routes in the OpenAPI document."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.insights.models import PATTERN_KINDS, SUGGESTION_STATUSES

PatternKind = Literal[PATTERN_KINDS]
SuggestionStatus = Literal[SUGGESTION_STATUSES]


class PatternOut(BaseModel):
    id: int
    kind: PatternKind
    key: str = Field(description="Stable key: a SHA-256 of the kind and what identifies the pattern.")
    score: float = Field(description="The headline number within the kind (events, degree, support, ...).")
    current: bool = Field(description="False once an analysis no longer finds the pattern.")
    summary: str
    data: dict[str, Any] = Field(description="Every number the analysis found; the fields depend on the kind.")
    first_found_at: str
    updated_at: str
    files: list[str] | None = Field(None, description="co_used only: the two paths.")
    shared_sessions: int | None = Field(None, description="co_used only: sessions with both files.")
    degree: float | None = Field(
        None, description="co_used only: code-maat's change-coupling degree in percent, to one decimal."
    )


class PatternPage(BaseModel):
    data: list[PatternOut]
    next_cursor: str | None


class SuggestionOut(BaseModel):
    id: int
    pattern_id: int
    kind: PatternKind
    title: str
    status: SuggestionStatus
    evidence: dict[str, Any]
    minutes_saved_per_month: float = Field(description="An estimate: occurrences per month × minutes each.")
    score: float = Field(description="Ranking score before the organization's feedback.")
    ranked_score: float = Field(description="score × the weight learned from accepted and dismissed suggestions.")
    sample_code: str = Field(description="A Python script (standard library only) using the real paths.")
    workflow_draft: dict[str, Any] = Field(description="A workflow definition: trigger and steps.")
    pattern_current: bool
    decided_at: str | None
    decided_by_id: int | None
    created_at: str
    updated_at: str


class SuggestionPage(BaseModel):
    data: list[SuggestionOut]
    next_cursor: str | None


class AnalysisStatusOut(BaseModel):
    status: Literal["never", "running", "succeeded", "failed"]
    queued: bool = Field(description="True while a run is waiting to start.")
    requested_at: str | None
    started_at: str | None
    finished_at: str | None
    events_analyzed: int
    sessions_analyzed: int
    error: str | None
    patterns: dict[str, int] = Field(description="Current patterns by kind.")
    suggestions: dict[str, int] = Field(description="Suggestions by status; open ones only while current.")


class AnalysisRunOut(BaseModel):
    enqueued: bool = Field(description="False when a run was already queued; it will include the latest events.")
    status: AnalysisStatusOut
