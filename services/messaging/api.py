"""The MessagingService servicer: validates requests, calls the use cases, converts.

Every request is validated completely before any work (one INVALID_ARGUMENT listing every bad
field). Roles and ownership were checked by the runtime from the contract's auth options: only
services and staff send; a customer reads only notifications whose ``customer`` they name, and
a notification of another customer is NOT_FOUND. Conversations, messages and the inbox are part 2
(issue #13): those RPCs answer UNIMPLEMENTED (the generated base class's default).
"""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any, TypeAlias

import grpc
from google.protobuf import empty_pb2

from omni.messaging.v1 import messaging_service_pb2 as svc
from omni.messaging.v1 import messaging_service_pb2_grpc
from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni_runtime.errors import InvalidArgument
from omni_runtime.validation import Checker
from services.messaging import callbacks, notifications, receipts, template_admin
from services.messaging.convert import CUSTOMER, NOTIFICATION, TEMPLATE
from services.messaging.domain import DOMAIN
from services.messaging.domain import templates as rules
from services.messaging.unit import Unit

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

TOPIC = re.compile(r"[a-z][a-z0-9_]{0,63}")
PARAM = re.compile(r"[A-Za-z0-9_]{1,64}")
MAX_PARAMS = 100
MAX_PARAM_VALUE = 2000
PURPOSES = frozenset(pref.ContactPurpose.values())
RECEIPT_STATUSES = frozenset(res.DeliveryReceiptStatus.values()) - {res.DELIVERY_RECEIPT_STATUS_UNSPECIFIED}


def _raise_if_invalid(check: Checker) -> None:
    if check.violations:
        raise InvalidArgument(check.violations, domain=DOMAIN)


def _topic(check: Checker, field: str, value: str, *, required: bool) -> None:
    if not value:
        if required:
            check.fail(field, "is required", "REQUIRED")
        return
    if not TOPIC.fullmatch(value):
        check.fail(
            field,
            "must be lower_snake_case (a-z, 0-9, _; starting with a letter), at most 64",
            "INVALID_TOPIC",
        )


def _check_template(check: Checker, template: res.Template, field: str = "template") -> None:
    _topic(check, f"{field}.topic", template.topic, required=True)
    check.length(f"{field}.display_name", template.display_name, max_len=200)
    if template.purpose not in PURPOSES:
        check.fail(f"{field}.purpose", "is not a known contact purpose", "INVALID_ENUM")


class MessagingServicer(messaging_service_pb2_grpc.MessagingServiceServicer):
    def __init__(self, unit: Unit) -> None:
        self.unit = unit

    # --- notifications -------------------------------------------------------------------------

    async def SendNotification(
        self, request: svc.SendNotificationRequest, context: Context
    ) -> res.Notification:
        check = Checker()
        n = request.notification
        if not request.HasField("notification"):
            check.fail("notification", "is required", "REQUIRED")
        check.name("notification.customer", n.customer, CUSTOMER)
        check.name("notification.template", n.template, TEMPLATE)
        _topic(check, "notification.topic", n.topic, required=False)
        if n.purpose not in PURPOSES:
            check.fail("notification.purpose", "is not a known contact purpose", "INVALID_ENUM")
        if n.requested_channel and n.requested_channel not in rules.CHANNELS:
            check.fail(
                "notification.requested_channel",
                "must be an outbound channel: EMAIL, SMS, PUSH, SOCIAL, MOBILE_APP or WEB",
                "INVALID_CHANNEL",
            )
        if len(n.params) > MAX_PARAMS:
            check.fail("notification.params", f"must have at most {MAX_PARAMS} entries", "TOO_MANY")
        for key, value in n.params.items():
            if not PARAM.fullmatch(key):
                check.fail(
                    f"notification.params[{key}]", "names must be letters, digits and _", "INVALID_PARAM"
                )
            elif len(value) > MAX_PARAM_VALUE:
                check.fail(
                    f"notification.params[{key}]",
                    f"must be at most {MAX_PARAM_VALUE} characters",
                    "INVALID_PARAM",
                )
        check.length("notification.subject_resource", n.subject_resource, max_len=500)
        if n.HasField("expire_time") and n.expire_time.ToDatetime(tzinfo=UTC) <= self.unit.clock.now():
            check.fail("notification.expire_time", "must be in the future", "EXPIRE_TIME_PASSED")
        check.request_id("request_id", request.request_id, required=True)
        _raise_if_invalid(check)
        return await notifications.send(self.unit, request)

    async def GetNotification(
        self, request: svc.GetNotificationRequest, context: Context
    ) -> res.Notification:
        check = Checker()
        ids = check.name("name", request.name, NOTIFICATION)
        check.optional_name("customer", request.customer, CUSTOMER)
        _raise_if_invalid(check)
        return await notifications.get(self.unit, ids["notification"], request.customer)

    async def ListNotifications(
        self, request: svc.ListNotificationsRequest, context: Context
    ) -> svc.ListNotificationsResponse:
        check = Checker()
        check.optional_name("customer", request.customer, CUSTOMER)
        query = notifications.NOTIFICATIONS.parse(request, check, scope=("notifications", request.customer))
        _raise_if_invalid(check)
        return await notifications.list_(self.unit, request.customer, query)

    async def RecordDeliveryReceipt(
        self, request: svc.RecordDeliveryReceiptRequest, context: Context
    ) -> res.Notification:
        check = Checker()
        check.require("provider", request.provider)
        check.length("provider", request.provider, max_len=64)
        check.require("provider_message_id", request.provider_message_id)
        check.length("provider_message_id", request.provider_message_id, max_len=500)
        if request.status not in RECEIPT_STATUSES:
            check.fail("status", "is required: DELIVERED, FAILED, OPENED or CLICKED", "REQUIRED")
        check.length("error_code", request.error_code, max_len=100)
        check.length("error_message", request.error_message, max_len=1000)
        check.length("url", request.url, max_len=2000)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        occur = request.occur_time.ToDatetime(tzinfo=UTC) if request.HasField("occur_time") else None
        async with self.unit.db.transaction() as session:
            return await receipts.apply(
                self.unit,
                session,
                provider=request.provider,
                provider_message_id=request.provider_message_id,
                status=request.status,
                error_code=request.error_code,
                error_message=request.error_message,
                url=request.url,
                occur_time=occur,
            )

    async def ReceiveProviderCallback(
        self, request: svc.ReceiveProviderCallbackRequest, context: Context
    ) -> svc.ReceiveProviderCallbackResponse:
        check = Checker()
        check.require("provider", request.provider)
        check.length("provider", request.provider, max_len=64)
        if not request.HasField("http_request"):
            check.fail("http_request", "is required", "REQUIRED")
        _raise_if_invalid(check)
        return await callbacks.receive(self.unit, request)

    # --- templates -----------------------------------------------------------------------------

    async def CreateTemplate(self, request: svc.CreateTemplateRequest, context: Context) -> res.Template:
        check = Checker()
        if check.require("template_id", request.template_id) and not rules.ID_PATTERN.fullmatch(
            request.template_id
        ):
            check.fail(
                "template_id",
                "must be lower-case letters, digits and -, starting with a letter",
                "INVALID_ID",
            )
        if not request.HasField("template"):
            check.fail("template", "is required", "REQUIRED")
        _check_template(check, request.template)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await template_admin.create(self.unit, request)

    async def GetTemplate(self, request: svc.GetTemplateRequest, context: Context) -> res.Template:
        check = Checker()
        ids = check.name("name", request.name, TEMPLATE)
        _raise_if_invalid(check)
        return await template_admin.get(self.unit, ids["template"])

    async def ListTemplates(
        self, request: svc.ListTemplatesRequest, context: Context
    ) -> svc.ListTemplatesResponse:
        check = Checker()
        query = template_admin.TEMPLATES.parse(request, check, scope=("templates",))
        _raise_if_invalid(check)
        return await template_admin.list_(self.unit, query)

    async def UpdateTemplate(self, request: svc.UpdateTemplateRequest, context: Context) -> res.Template:
        check = Checker()
        ids = check.name("template.name", request.template.name, TEMPLATE)
        if request.update_mask.paths:
            fields = check.update_mask(
                "update_mask", request.update_mask, template_admin.UPDATABLE, res.Template()
            )
        else:
            fields = [f for f in template_admin.UPDATABLE if _is_set(request.template, f)]
            if not fields:
                check.fail("update_mask", "names no field to update, and the template sets none", "REQUIRED")
        if "topic" in fields:
            _topic(check, "template.topic", request.template.topic, required=True)
        if "purpose" in fields and request.template.purpose not in PURPOSES:
            check.fail("template.purpose", "is not a known contact purpose", "INVALID_ENUM")
        check.length("template.display_name", request.template.display_name, max_len=200)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await template_admin.update_template(self.unit, request, ids["template"], fields)

    async def DeleteTemplate(self, request: svc.DeleteTemplateRequest, context: Context) -> empty_pb2.Empty:
        check = Checker()
        ids = check.name("name", request.name, TEMPLATE)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await template_admin.delete(self.unit, request, ids["template"])


def _is_set(template: res.Template, field: str) -> bool:
    value = getattr(template, field)
    return bool(len(value)) if field == "contents" else bool(value)
