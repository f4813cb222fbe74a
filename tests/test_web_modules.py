"""The pure pieces the web front's pages are built from (issue 24): what a failed confirmation email
answers, how the forms are read, what a manage button changes, and why a form post is refused."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from starlette.datastructures import FormData, Headers

from digest.errors import DeliveryError, DigestError, PermanentDeliveryError
from digest.models import Subscriber
from digest.web.forms import FORM_CROSS_SITE, FORM_EXPIRED, ManageForm, SignupForm, form_refusal
from digest.web.manage import change_subscription
from digest.web.security import form_token
from digest.web.subscribe import not_sent
from tests.conftest import pass_store

ADA = "ada@example.org"
SITE = "https://digest.example.org"
SECRET = "a-secret-for-the-form-tokens"


def raised(error: DigestError, cause: BaseException | None = None) -> DigestError:
    try:
        raise error from cause
    except DigestError as exc:
        return exc


def test_a_failed_confirmation_email_is_answered_by_what_failed() -> None:
    no_utf8 = raised(PermanentDeliveryError("refused"), smtplib.SMTPNotSupportedError())
    status, field, text = not_sent(no_utf8)
    assert (status, field) == (400, "email_error") and "another address" in text
    assert not_sent(raised(PermanentDeliveryError("550 no such user")))[:2] == (503, "form_error")
    assert not_sent(raised(DeliveryError("connection refused", server_wide=True)))[:2] == (503, "form_error")
    status, field, text = not_sent(raised(DigestError("disk full")))
    assert (status, field) == (500, "form_error") and "no email was sent" in text


def test_the_forms_are_read_once_with_a_forged_layout_made_full() -> None:
    signup = SignupForm.read(FormData([("email", ADA), ("rules", "gpu"), ("layout", "bogus"), ("action", "preview")]))
    assert signup.kept() == {"email": ADA, "rules_text": "gpu", "layout": "full"}
    assert signup.action == "preview"
    assert ManageForm.read(FormData([("token", "t"), ("action", "pause")])).layout is None, "no field: the layout stays"
    save = ManageForm.read(FormData([("action", "save"), ("rules", "tpu"), ("layout", "compact")]))
    assert (save.token, save.layout) == ("", "compact")
    assert save.kept_rules(("gpu", "4090")) == "tpu"
    assert ManageForm.read(FormData([("action", "pause"), ("rules", "tpu")])).kept_rules(("gpu", "4090")) == "gpu\n4090"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("save", Subscriber(ADA, ("tpu",), layout="compact")),
        ("pause", Subscriber(ADA, ("gpu",), active=False)),
        ("resume", Subscriber(ADA, ("gpu",))),
    ],
)
def test_a_manage_button_changes_only_what_it_names(tmp_path: Path, action: str, expected: Subscriber) -> None:
    with pass_store(tmp_path) as store:
        store.save_subscriber(Subscriber(ADA, ("gpu",)))
        assert change_subscription(store, ADA, action, ("tpu",), "compact") is True
        assert store.subscriber(ADA) == expected


def test_a_manage_button_for_an_address_that_left_meanwhile_writes_nothing(tmp_path: Path) -> None:
    with pass_store(tmp_path) as store:
        assert change_subscription(store, ADA, "save", ("tpu",), None) is False
        assert store.subscriber(ADA) is None


def test_a_form_post_is_refused_from_another_site_or_with_an_old_form_token() -> None:
    now = 1_800_000_000.0
    good = FormData([("csrf", form_token(SECRET, now))])
    assert form_refusal(Headers({"origin": SITE}), good, SECRET, SITE, now) is None
    assert form_refusal(Headers({"sec-fetch-site": "cross-site"}), good, SECRET, SITE, now) == FORM_CROSS_SITE
    assert form_refusal(Headers({"origin": SITE}), good, SECRET, SITE, now + 3 * 86400) == FORM_EXPIRED
    assert form_refusal(Headers({}), FormData([("csrf", "0" * 48)]), SECRET, SITE, now) == FORM_EXPIRED
