"""The messaging service's adapters: the providers that carry messages (smtp, twilio, fcm,
webhook, inapp) behind one interface (``base``), chosen per channel by configuration
(``registry``), and the clients of its peers (``preferences``, ``identity``)."""
