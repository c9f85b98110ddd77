from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length
from wtforms.widgets import CheckboxInput, ListWidget

from app.auth.scopes import DEFAULT_SCOPES, EXPIRY_DAY_CHOICES, ROLE_SCOPES, SCOPES


class SignUpForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=120)])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=10, max=200)])
    confirm = PasswordField("Repeat password", validators=[EqualTo("password", message="The passwords do not match.")])


class SignInForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Keep me signed in")


class ApiKeyForm(FlaskForm):
    name = StringField("Key name", validators=[DataRequired(), Length(max=100)])
    scopes = SelectMultipleField(
        "Scopes",
        choices=[SelectChoice(scope, scope) for scope in SCOPES],
        default=list(DEFAULT_SCOPES),
        option_widget=CheckboxInput(),
        widget=ListWidget(prefix_label=False),
    )
    expires_in_days = SelectField(
        "Expires",
        choices=[SelectChoice("never", "never")]
        + [SelectChoice(str(days), f"in {days} days") for days in EXPIRY_DAY_CHOICES],
        default="never",
    )

    def limit_scopes_to(self, role):
        """Offer only the scopes `role` may give its keys, and pre-select the defaults among them."""
        allowed = ROLE_SCOPES.get(role, ())
        self.scopes.choices = [SelectChoice(scope, scope) for scope in SCOPES if scope in allowed]
        if not self.is_submitted():
            self.scopes.data = [scope for scope in DEFAULT_SCOPES if scope in allowed]

    def chosen_scopes(self, form_data, role):
        """Return the checked scopes, or the defaults allowed to `role` when the form had no checkboxes.

        The settings page sends `scopes_offered` with its checkboxes, so an empty selection there
        is an error; a client that posts only a name, as before scopes existed, gets the defaults.
        """
        if self.scopes.data or "scopes_offered" in form_data:
            return self.scopes.data
        return [scope for scope in DEFAULT_SCOPES if scope in ROLE_SCOPES.get(role, ())]

    def expires_in_days_value(self):
        """Return the chosen expiry in days, or None for a key that never expires."""
        return None if self.expires_in_days.data == "never" else int(self.expires_in_days.data)

    def first_error(self):
        """Return the first validation message, prefixed with its field's label."""
        for field in self:
            if field.errors:
                return f"{field.label.text}: {field.errors[0]}"
        return "The form is invalid."


class EmptyForm(FlaskForm):
    """A form with only the CSRF token, for buttons that post."""


class ForgotPasswordForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])


class ResetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(min=10, max=200)])
    confirm = PasswordField(
        "Repeat new password", validators=[EqualTo("password", message="The passwords do not match.")]
    )


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    password = PasswordField("New password", validators=[DataRequired(), Length(min=10, max=200)])
    confirm = PasswordField(
        "Repeat new password", validators=[EqualTo("password", message="The passwords do not match.")]
    )


class ChangeEmailForm(FlaskForm):
    email = EmailField("New email", validators=[DataRequired(), Length(max=254)])
    current_password = PasswordField("Current password", validators=[DataRequired()])


class DeleteAccountForm(FlaskForm):
    confirm_email = EmailField("Type your email to confirm", validators=[DataRequired(), Length(max=254)])
    current_password = PasswordField("Current password", validators=[DataRequired()])


class TwoFactorCodeForm(FlaskForm):
    code = StringField(
        "Code",
        validators=[DataRequired(message="Enter the code."), Length(max=32, message="The code is too long.")],
        render_kw={"autocomplete": "one-time-code", "spellcheck": "false"},
    )


class OrganizationTwoFactorForm(FlaskForm):
    require_two_factor = BooleanField("Require two-factor sign-in for every member")
