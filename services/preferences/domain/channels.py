"""Channels as contact routes: which carry outbound contacts, which need an address."""

from __future__ import annotations

from omni.identity.v1 import resources_pb2 as identity_res
from omni.profile.v1 import resources_pb2 as profile_res
from omni.type.v1 import channel_pb2 as ch

# Channels on which the business can start a contact. WEB and MOBILE_APP mean on-site and in-app
# messages; POS, kiosk, store associate, chat and back office are places a customer comes to.
CONTACTABLE = frozenset(
    {
        ch.CHANNEL_EMAIL,
        ch.CHANNEL_SMS,
        ch.CHANNEL_PUSH,
        ch.CHANNEL_SOCIAL,
        ch.CHANNEL_CALL_CENTER,
        ch.CHANNEL_MOBILE_APP,
        ch.CHANNEL_WEB,
    }
)
# Contactable channels that reach the customer only through a known address.
NEEDS_CONTACT_POINT = frozenset(
    {ch.CHANNEL_EMAIL, ch.CHANNEL_SMS, ch.CHANNEL_PUSH, ch.CHANNEL_SOCIAL, ch.CHANNEL_CALL_CENTER}
)
# Channels whose consent needs the customer's double opt-in while the address is not verified.
DOUBLE_OPT_IN = frozenset({ch.CHANNEL_EMAIL, ch.CHANNEL_SMS})

PROFILE_KINDS: dict[int, tuple[int, ...]] = {
    profile_res.ContactPoint.KIND_EMAIL: (ch.CHANNEL_EMAIL,),
    profile_res.ContactPoint.KIND_PHONE: (ch.CHANNEL_SMS, ch.CHANNEL_CALL_CENTER),
    profile_res.ContactPoint.KIND_PUSH_TOKEN: (ch.CHANNEL_PUSH,),
    profile_res.ContactPoint.KIND_FACEBOOK: (ch.CHANNEL_SOCIAL,),
    profile_res.ContactPoint.KIND_WHATSAPP: (ch.CHANNEL_SOCIAL,),
    profile_res.ContactPoint.KIND_INSTAGRAM: (ch.CHANNEL_SOCIAL,),
}
IDENTIFIER_KINDS: dict[int, tuple[int, ...]] = {
    identity_res.IDENTIFIER_KIND_EMAIL: (ch.CHANNEL_EMAIL,),
    identity_res.IDENTIFIER_KIND_PHONE: (ch.CHANNEL_SMS, ch.CHANNEL_CALL_CENTER),
    identity_res.IDENTIFIER_KIND_FACEBOOK: (ch.CHANNEL_SOCIAL,),
    identity_res.IDENTIFIER_KIND_WHATSAPP: (ch.CHANNEL_SOCIAL,),
    identity_res.IDENTIFIER_KIND_INSTAGRAM: (ch.CHANNEL_SOCIAL,),
}


def name(channel: int) -> str:
    return ch.Channel.Name(channel)  # type: ignore[arg-type]
