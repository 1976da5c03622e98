"""The email templates."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from notifications_service.rendering import EmailRenderer, single_line
from notifications_service.service import order_email, short_id
from servicekit.events import OrderCancelled, OrderConfirmed, OrderFailed, PaymentRefunded

USER = uuid.UUID("6f1c2a34-0000-4000-8000-000000000001")
ORDER = uuid.UUID("3f2a9c1b-1111-4111-8111-111111111111")


@pytest.fixture(scope="module")
def renderer() -> EmailRenderer:
    return EmailRenderer()


class TestEmailRenderer:
    def test_welcome_greets_by_name_in_subject_text_and_html(self, renderer: EmailRenderer) -> None:
        email = renderer.render("welcome", {"name": "Ada Lovelace"})
        assert email.subject == "Welcome, Ada Lovelace"
        assert email.text.startswith("Hello Ada Lovelace,\n")
        assert "<h1" in email.html
        assert "Welcome, Ada Lovelace</h1>" in email.html

    def test_markup_in_a_name_is_escaped_in_html_only(self, renderer: EmailRenderer) -> None:
        email = renderer.render("welcome", {"name": '<script>alert(1)</script> & "Bob"'})
        assert "<script>" not in email.html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;Bob&#34;" in email.html
        assert 'Hello <script>alert(1)</script> & "Bob",' in email.text
        assert email.subject == 'Welcome, <script>alert(1)</script> & "Bob"'

    def test_a_subject_is_one_line_whatever_the_name(self, renderer: EmailRenderer) -> None:
        email = renderer.render("welcome", {"name": "Eve\r\nBcc: victim@example.com"})
        assert email.subject == "Welcome, Eve Bcc: victim@example.com"
        assert "\n" not in email.subject

    def test_a_missing_variable_is_an_error_not_a_blank(self, renderer: EmailRenderer) -> None:
        with pytest.raises(Exception, match="name"):
            renderer.render("welcome", {})

    @pytest.mark.parametrize(
        ("event", "template", "subject"),
        [
            (
                OrderConfirmed(
                    order_id=ORDER, user_id=USER, total_amount=Decimal("19.9"), currency="EUR"
                ),
                "order_confirmed",
                "Your order 3F2A9C1B is confirmed (19.90 EUR)",
            ),
            (
                OrderFailed(
                    order_id=ORDER,
                    user_id=USER,
                    total_amount=Decimal("19.90"),
                    currency="EUR",
                    reason="declined",
                ),
                "order_failed",
                "Your order 3F2A9C1B could not be completed",
            ),
            (
                OrderCancelled(
                    order_id=ORDER, user_id=USER, total_amount=Decimal("5"), currency="USD"
                ),
                "order_cancelled",
                "Your order 3F2A9C1B was cancelled",
            ),
            (
                PaymentRefunded(
                    payment_id=uuid.uuid4(),
                    order_id=ORDER,
                    user_id=USER,
                    amount=Decimal("5.00"),
                    currency="USD",
                    provider_reference="re_1",
                ),
                "payment_refunded",
                "Your refund for order 3F2A9C1B is on its way (5.00 USD)",
            ),
        ],
    )
    def test_every_order_email_renders_its_subject_and_both_parts(
        self, renderer: EmailRenderer, event: object, template: str, subject: str
    ) -> None:
        name, user_id, context = order_email(event)  # type: ignore[arg-type]
        email = renderer.render(name, {**context, "name": "Ada"})

        assert name == template
        assert user_id == USER
        assert email.subject == subject
        assert str(ORDER) in email.text
        assert str(ORDER) in email.html
        assert "Hello Ada," in email.text

    def test_a_failed_order_says_why_in_words(self, renderer: EmailRenderer) -> None:
        event = OrderFailed(
            order_id=ORDER,
            user_id=USER,
            total_amount=Decimal("1.00"),
            currency="EUR",
            reason="provider_unavailable",
        )
        name, _, context = order_email(event)
        email = renderer.render(name, {**context, "name": "Ada"})
        assert "the payment could not be processed in time" in email.text


class TestShortId:
    def test_is_the_first_eight_hex_digits_upper_case(self) -> None:
        assert short_id(ORDER) == "3F2A9C1B"


class TestSingleLine:
    def test_collapses_control_characters_and_spaces(self) -> None:
        assert single_line(" a\tb\r\n\x00c   d ") == "a b c d"
