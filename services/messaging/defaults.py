"""The platform's own templates, shipped with the service: what the event consumers send.

Created at start-up when missing (and by ``make run``'s seeding), never overwritten: a business
edits them with UpdateTemplate and its wording stays. English and Romanian, e-mail with an HTML
part, SMS, push and in-app where the message suits them.
"""

from __future__ import annotations

from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni.type.v1 import channel_pb2 as ch

EMAIL, SMS, PUSH, APP = ch.CHANNEL_EMAIL, ch.CHANNEL_SMS, ch.CHANNEL_PUSH, ch.CHANNEL_MOBILE_APP
ONE_TIME_CODE = "one-time-code"
ORDER_CONFIRMATION = "order-confirmation"
ORDER_READY = "order-ready-for-pickup"
ORDER_SHIPPED = "order-shipped"
ORDER_CANCELLED = "order-cancelled"
BACK_IN_STOCK = "back-in-stock"
CONSENT_CONFIRMATION = "consent-confirmation"


def _c(channel: int, locale: str, subject: str, body: str, html: str = "") -> res.TemplateContent:
    return res.TemplateContent(channel=channel, locale=locale, subject=subject, body=body, html_body=html)  # type: ignore[arg-type]


def _html(text: str) -> str:
    paragraphs = "".join(f"<p>{line}</p>" for line in text.split("\n") if line)
    return f'<!doctype html><html><body style="font-family:sans-serif">{paragraphs}</body></html>'


def _template(
    template_id: str, display: str, topic: str, purpose: int, *contents: res.TemplateContent
) -> res.Template:
    return res.Template(
        name=f"templates/{template_id}",
        display_name=display,
        topic=topic,
        purpose=purpose,  # type: ignore[arg-type]
        default_locale="en",
        contents=list(contents),
    )


TRANSACTIONAL = pref.CONTACT_PURPOSE_TRANSACTIONAL
URGENT = pref.CONTACT_PURPOSE_URGENT

DEFAULT_TEMPLATES: tuple[res.Template, ...] = (
    _template(
        ONE_TIME_CODE,
        "One-time login code",
        "security",
        URGENT,
        _c(
            EMAIL,
            "en",
            "Your Omni code: {{code}}",
            "Your code is {{code}}. It expires in {{expire_minutes}} minutes.\nIf you did not ask for it, ignore this message.",
            _html(
                "Your code is <b>{{code}}</b>. It expires in {{expire_minutes}} minutes.\nIf you did not ask for it, ignore this message."
            ),
        ),
        _c(SMS, "en", "", "Your Omni code is {{code}} (valid {{expire_minutes}} min). Never share it."),
        _c(
            EMAIL,
            "ro",
            "Codul tău Omni: {{code}}",
            "Codul tău este {{code}}. Expiră în {{expire_minutes}} minute.\nDacă nu l-ai cerut, ignoră acest mesaj.",
            _html(
                "Codul tău este <b>{{code}}</b>. Expiră în {{expire_minutes}} minute.\nDacă nu l-ai cerut, ignoră acest mesaj."
            ),
        ),
        _c(SMS, "ro", "", "Codul tău Omni este {{code}} (valabil {{expire_minutes}} min). Nu-l da nimănui."),
    ),
    _template(
        ORDER_CONFIRMATION,
        "Order confirmation",
        "order_updates",
        TRANSACTIONAL,
        _c(
            EMAIL,
            "en",
            "Order {{order_number}} confirmed",
            "Thank you! We received your order {{order_number}} ({{item_count}} items, total {{total}}).",
            _html(
                "Thank you! We received your order <b>{{order_number}}</b> ({{item_count}} items, total {{total}})."
            ),
        ),
        _c(SMS, "en", "", "Omni: order {{order_number}} confirmed, total {{total}}. Thank you!"),
        _c(PUSH, "en", "Order confirmed", "Order {{order_number}} is confirmed ({{total}})."),
        _c(APP, "en", "Order confirmed", "Order {{order_number}} is confirmed ({{total}})."),
        _c(
            EMAIL,
            "ro",
            "Comanda {{order_number}} a fost confirmată",
            "Mulțumim! Am primit comanda {{order_number}} ({{item_count}} produse, total {{total}}).",
            _html(
                "Mulțumim! Am primit comanda <b>{{order_number}}</b> ({{item_count}} produse, total {{total}})."
            ),
        ),
        _c(SMS, "ro", "", "Omni: comanda {{order_number}} confirmată, total {{total}}. Mulțumim!"),
    ),
    _template(
        ORDER_READY,
        "Pickup ready",
        "order_updates",
        TRANSACTIONAL,
        _c(
            EMAIL,
            "en",
            "Your order {{order_number}} is ready for pickup",
            "Your order {{order_number}} is waiting for you at {{store_name}} until {{pickup_deadline}}.",
            _html(
                "Your order <b>{{order_number}}</b> is waiting for you at {{store_name}} until {{pickup_deadline}}."
            ),
        ),
        _c(
            SMS,
            "en",
            "",
            "Omni: order {{order_number}} is ready at {{store_name}} until {{pickup_deadline}}.",
        ),
        _c(PUSH, "en", "Ready for pickup", "Order {{order_number}} is ready at {{store_name}}."),
        _c(
            APP,
            "en",
            "Ready for pickup",
            "Order {{order_number}} is ready at {{store_name}} until {{pickup_deadline}}.",
        ),
    ),
    _template(
        ORDER_SHIPPED,
        "Order shipped",
        "order_updates",
        TRANSACTIONAL,
        _c(
            EMAIL,
            "en",
            "Your order {{order_number}} is on its way",
            "Your order {{order_number}} was shipped. Tracking: {{tracking_reference}}.",
            _html("Your order <b>{{order_number}}</b> was shipped. Tracking: {{tracking_reference}}."),
        ),
        _c(SMS, "en", "", "Omni: order {{order_number}} shipped. Tracking {{tracking_reference}}."),
        _c(PUSH, "en", "Order shipped", "Order {{order_number}} is on its way."),
    ),
    _template(
        ORDER_CANCELLED,
        "Order cancelled",
        "order_updates",
        TRANSACTIONAL,
        _c(
            EMAIL,
            "en",
            "Your order {{order_number}} was cancelled",
            "Your order {{order_number}} was cancelled: {{reason}}.",
            _html("Your order <b>{{order_number}}</b> was cancelled: {{reason}}."),
        ),
        _c(SMS, "en", "", "Omni: order {{order_number}} was cancelled ({{reason}})."),
        _c(PUSH, "en", "Order cancelled", "Order {{order_number}} was cancelled."),
    ),
    _template(
        BACK_IN_STOCK,
        "Back in stock",
        "back_in_stock",
        TRANSACTIONAL,
        _c(
            EMAIL,
            "en",
            "{{item_title}} is back in stock",
            "Good news: {{item_title}} is available again at {{location_name}}.",
            _html("Good news: <b>{{item_title}}</b> is available again at {{location_name}}."),
        ),
        _c(SMS, "en", "", "Omni: {{item_title}} is back in stock at {{location_name}}."),
        _c(PUSH, "en", "Back in stock", "{{item_title}} is available again at {{location_name}}."),
        _c(APP, "en", "Back in stock", "{{item_title}} is available again at {{location_name}}."),
    ),
    _template(
        CONSENT_CONFIRMATION,
        "Double opt-in confirmation",
        "consent",
        URGENT,
        _c(
            EMAIL,
            "en",
            "Please confirm your subscription",
            "You asked to receive {{topic}} messages from Omni at this address.\nConfirm here (the page asks you to press a button): {{confirm_url}}\nThe link expires on {{expire_time}}. If it was not you, ignore this message.",
            _html(
                'You asked to receive {{topic}} messages from Omni at this address.\n<a href="{{confirm_url}}">Confirm your subscription</a> (the page asks you to press a button).\nThe link expires on {{expire_time}}. If it was not you, ignore this message.'
            ),
        ),
        _c(
            SMS,
            "en",
            "",
            "Omni: confirm {{topic}} messages at {{confirm_url}} (expires {{expire_time}}). Not you? Ignore this.",
        ),
        _c(
            EMAIL,
            "ro",
            "Confirmă abonarea",
            "Ai cerut să primești mesaje {{topic}} de la Omni la această adresă.\nConfirmă aici (pagina îți cere să apeși un buton): {{confirm_url}}\nLinkul expiră la {{expire_time}}. Dacă nu ai fost tu, ignoră mesajul.",
            _html(
                'Ai cerut să primești mesaje {{topic}} de la Omni la această adresă.\n<a href="{{confirm_url}}">Confirmă abonarea</a> (pagina îți cere să apeși un buton).\nLinkul expiră la {{expire_time}}. Dacă nu ai fost tu, ignoră mesajul.'
            ),
        ),
        _c(
            SMS,
            "ro",
            "",
            "Omni: confirmă mesajele {{topic}} la {{confirm_url}} (expiră {{expire_time}}). Nu ai fost tu? Ignoră.",
        ),
    ),
)
