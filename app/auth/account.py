"""Account pages on the `auth` blueprint: email verification, password reset and change, email change, deletion.

Verification gates nothing for now: an unverified user can use every page, and each page shows a banner
with a button that resends the link.
"""

import logging
from datetime import timedelta

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.auth import account_service, service
from app.auth.forms import ChangeEmailForm, ChangePasswordForm, DeleteAccountForm, ForgotPasswordForm, ResetPasswordForm
from app.auth.views import bp
from app.errors import ServiceError
from app.extensions import db
from app.mail import MailError
from app.ratelimit import enforce

logger = logging.getLogger(__name__)


def _client_address():
    return request.remote_addr or ""


def _verification_hours():
    return current_app.config["EMAIL_VERIFICATION_TTL_HOURS"]


def _reset_minutes():
    return current_app.config["PASSWORD_RESET_TTL_MINUTES"]


def _show_errors(form, error):
    """Put a service error's per-field details under the form's fields, or flash its message."""
    fields = [name for name in (error.details or {}) if name in form]
    for name in fields:
        form[name].errors.append(error.message)
    if not fields:
        flash(error.message, "error")


@bp.app_template_filter("device")
def device_filter(user_agent):
    return account_service.describe_user_agent(user_agent)


# Email verification


def send_verification(user):
    """Issue and commit a verification token for `user`, then email the link; return whether it was sent."""
    raw = account_service.start_email_verification(user, timedelta(hours=_verification_hours()))
    db.session.commit()
    link = url_for("auth.verify_email", token=raw, _external=True)
    try:
        account_service.send_verification_email(user.email, link, _verification_hours())
    except MailError:
        logger.warning("verification email not sent user_id=%s", user.id)
        return False
    return True


@bp.get("/account/verify/<token>")
def verify_email(token):
    """Mark the email verified from the emailed link; works signed in or not."""
    account_service.verify_email(token, _client_address())
    db.session.commit()

    flash("Your email is verified.", "success")
    return redirect(url_for("insights.dashboard") if current_user.is_authenticated else url_for("auth.signin"))


@bp.post("/account/verify/resend")
@login_required
def resend_verification():
    """Send a new verification link; earlier links stop working."""
    if current_user.email_verified_at is not None:
        flash("Your email is already verified.", "success")
        return redirect(url_for("auth.account_settings"))
    enforce(
        f"verify-resend:user:{current_user.id}",
        current_app.config["VERIFICATION_RESEND_RATE_LIMIT"],
        current_app.config["VERIFICATION_RESEND_RATE_WINDOW_SECONDS"],
        "Too many verification emails.",
    )

    if send_verification(current_user):
        flash(f"We sent a new verification link to {current_user.email}.", "success")
    else:
        flash("The verification email could not be sent. Try again later.", "error")
    return redirect(request.referrer if _same_site(request.referrer) else url_for("auth.account_settings"))


def _same_site(url):
    return bool(url) and url.startswith(request.host_url)


# Password reset


@bp.route("/password/forgot", methods=["GET", "POST"])
def forgot_password():
    """Email a reset link. The response is the same whether or not an account has the email."""
    form = ForgotPasswordForm()
    if not form.validate_on_submit():
        status = 200 if request.method == "GET" else 422
        return render_template("auth/account/forgot_password.html", form=form), status

    config = current_app.config
    message = "Too many password reset requests."
    window = config["PASSWORD_RESET_RATE_WINDOW_SECONDS"]
    email = service.normalize_email(form.email.data)
    enforce(f"password-reset:ip:{_client_address()}", config["PASSWORD_RESET_ADDRESS_RATE_LIMIT"], window, message)
    enforce(f"password-reset:email:{email}", config["PASSWORD_RESET_RATE_LIMIT"], window, message)

    lifetime = timedelta(minutes=_reset_minutes())
    user, raw = account_service.request_password_reset(email, lifetime, _client_address())
    db.session.commit()
    # NOTE: the email is sent inside the request, so a slow SMTP server makes the response for an
    # existing account measurably slower than for an unknown one.
    if raw is not None:
        link = url_for("auth.reset_password", token=raw, _external=True)
        try:
            account_service.send_password_reset_email(user.email, link, _reset_minutes())
        except MailError:
            logger.warning("password reset email not sent user_id=%s", user.id)

    flash(
        f"If an account exists for {email}, we sent it a link to reset the password. "
        f"The link expires in {_reset_minutes()} minutes.",
        "success",
    )
    return redirect(url_for("auth.forgot_password"))


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset_password(token):
    """Choose a new password from the emailed link; every session ends and the user signs in again."""
    account_service.find_token(token, account_service.RESET_PASSWORD)
    form = ResetPasswordForm()
    if not form.validate_on_submit():
        status = 200 if request.method == "GET" else 422
        return render_template("auth/account/reset_password.html", form=form, token=token), status

    try:
        account_service.reset_password(token, form.password.data, _client_address())
    except ServiceError as error:
        db.session.rollback()
        _show_errors(form, error)
        return render_template("auth/account/reset_password.html", form=form, token=token), error.status
    db.session.commit()

    logout_user()
    flash("Your password was changed and every session was signed out. Sign in with the new password.", "success")
    return redirect(url_for("auth.signin"))


# The account settings page


def _render_account(status=200, **forms):
    forms.setdefault("password_form", ChangePasswordForm(formdata=None))
    forms.setdefault("email_form", ChangeEmailForm(formdata=None))
    forms.setdefault("delete_form", DeleteAccountForm(formdata=None))
    blocking = account_service.organizations_blocking_deletion(current_user)
    return render_template("auth/account/settings.html", blocking=blocking, **forms), status


@bp.get("/settings/account")
@login_required
def account_settings():
    """Password, email and account deletion."""
    return _render_account()


@bp.post("/settings/password")
@login_required
def change_password():
    """Change the password; every other session and every remember-me cookie stop working."""
    form = ChangePasswordForm()
    if not form.validate_on_submit():
        return _render_account(422, password_form=form)

    user = current_user._get_current_object()
    remembered = current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token") in request.cookies
    try:
        account_service.change_password(user, form.current_password.data, form.password.data, _client_address())
    except ServiceError as error:
        db.session.rollback()
        _show_errors(form, error)
        return _render_account(error.status, password_form=form)
    # Every session was revoked, this one too; this browser gets a new session (and a new
    # remember-me cookie if it had one), so a copy of its old cookies stops working as well.
    service.start_session(user, request.user_agent.string, _client_address())
    db.session.commit()
    login_user(user, remember=remembered)

    flash("Your password was changed. Every other session was signed out.", "success")
    return redirect(url_for("auth.account_settings"))


@bp.post("/settings/email")
@login_required
def change_email():
    """Send a confirmation link to the new address; the change applies when it is opened."""
    form = ChangeEmailForm()
    if not form.validate_on_submit():
        return _render_account(422, email_form=form)

    user = current_user._get_current_object()
    lifetime = timedelta(hours=_verification_hours())
    try:
        raw, new_email = account_service.request_email_change(
            user, form.current_password.data, form.email.data, lifetime, _client_address()
        )
    except ServiceError as error:
        db.session.rollback()
        _show_errors(form, error)
        return _render_account(error.status, email_form=form)
    db.session.commit()

    link = url_for("auth.confirm_email_change", token=raw, _external=True)
    try:
        account_service.send_email_change_emails(user.email, new_email, link, _verification_hours())
    except MailError:
        logger.warning("email change confirmation not sent user_id=%s", user.id)
        flash("The confirmation email could not be sent. Try again later.", "error")
        return redirect(url_for("auth.account_settings"))
    flash(f"We sent a confirmation link to {new_email}. Your email changes when you open it.", "success")
    return redirect(url_for("auth.account_settings"))


@bp.get("/account/email/confirm/<token>")
def confirm_email_change(token):
    """Apply an email change from the link sent to the new address, and tell the old address."""
    user, old_email = account_service.confirm_email_change(token, _client_address())
    db.session.commit()

    try:
        account_service.send_email_changed_notice(old_email, user.email)
    except MailError:
        logger.warning("email change notice not sent user_id=%s", user.id)
    flash(f"Your email is now {user.email}.", "success")
    if current_user.is_authenticated:
        return redirect(url_for("auth.account_settings"))
    return redirect(url_for("auth.signin"))


@bp.post("/settings/account/delete")
@login_required
def delete_account():
    """Delete the account and the organizations only the user belongs to, then sign out."""
    form = DeleteAccountForm()
    if not form.validate_on_submit():
        return _render_account(422, delete_form=form)

    user = current_user._get_current_object()
    try:
        account_service.delete_account(user, form.confirm_email.data, form.current_password.data, _client_address())
    except ServiceError as error:
        db.session.rollback()
        _show_errors(form, error)
        return _render_account(error.status, delete_form=form)
    db.session.commit()

    logout_user()
    flash("Your account and its data were deleted.", "success")
    return redirect(url_for("auth.signin"))
