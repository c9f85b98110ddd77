"""Every model, imported in one place so that Alembic's autogenerate and `flask db check` see them all."""

from app.admin.models import AuditEntry  # noqa: F401
from app.analytics.models import ActivitySession, AnalyticsState, HourlyCount, PathHourlyCount  # noqa: F401
from app.auth.models import AccountToken, ApiKey, BackupCode, User, UserSession  # noqa: F401
from app.billing.models import BillingAccount, Invoice, Subscription, UsageCounter  # noqa: F401
from app.events.models import Event, GitImport  # noqa: F401
from app.files.models import File, Folder  # noqa: F401
from app.insights.models import AnalysisState, Pattern, Suggestion  # noqa: F401
from app.integrations.models import Integration  # noqa: F401
from app.orgs.models import Invitation, Membership, Organization  # noqa: F401
from app.webhooks.models import OutgoingDelivery, WebhookDelivery, WebhookEndpoint  # noqa: F401
from app.workflows.models import StepAttempt, Workflow, WorkflowRun, WorkflowVersion  # noqa: F401
