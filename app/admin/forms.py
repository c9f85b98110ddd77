"""Forms of the admin console."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from app.admin.maintenance import MAX_MESSAGE_LENGTH


class UserEditForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=120)])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    is_admin = BooleanField("Site admin")


class DeleteUserForm(FlaskForm):
    confirm_email = StringField("Type the user's email to confirm", validators=[DataRequired()])


class MaintenanceForm(FlaskForm):
    message = TextAreaField("Message shown on every page", validators=[Length(max=MAX_MESSAGE_LENGTH)])
    # A datetime-local input: no offset, read as UTC like every time in the console.
    ends_at = StringField("Expected end (UTC, optional)")
