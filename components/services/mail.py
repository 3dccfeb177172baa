"""The stack's outgoing mail, one fact for Gitea and Alertmanager: where SMTP goes and which domain mail comes from.

AWS stacks send through Amazon SES as the domain mail.<domain> (components/mail.py creates the identity, its DNS
records and an SMTP user); the local stack sends to Mailpit, which keeps every message for its web UI. Mail
comes from its own subdomain so that its DKIM, MAIL FROM and DMARC records never meet the operator's own records
at the zone's apex. Pure functions settings -> facts and ServiceSpec.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.constants import SECRETS_DIR
from components.services import images
from components.services.spec import Healthcheck, Route, ServiceSpec
from components.settings import Settings

SUBDOMAIN = "mail"  # mail comes from <sender>@mail.<domain>; locally Mailpit's web UI answers there too
SES_SMTP_PORT = 587  # STARTTLS
SMTP_USERNAME = "sesSmtpUsername"  # credentials keys of the SES SMTP user (its access key id and SMTP password)
SMTP_PASSWORD = "sesSmtpPassword"  # noqa: S105 (a key name)
SMTP_USERNAME_FILE = f"{SECRETS_DIR}/smtp_username"
SMTP_PASSWORD_FILE = f"{SECRETS_DIR}/smtp_password"
MAILPIT = "mailpit"
MAILPIT_SMTP_PORT = 1025
MAILPIT_WEB_PORT = 8025


@dataclass(frozen=True)
class MailRelay:
    host: str
    port: int
    starttls: bool  # SES requires it; Mailpit on the Docker network speaks plain SMTP
    authenticated: bool  # the SMTP user and password are the SMTP_USERNAME / SMTP_PASSWORD credentials

    @property
    def smarthost(self) -> str:
        return f"{self.host}:{self.port}"


def ses_smtp_host(region: str) -> str:
    return f"email-smtp.{region}.amazonaws.com"


def mail_domain(settings: Settings) -> str:
    return settings.hostname(SUBDOMAIN)


def sender(settings: Settings, local_part: str) -> str:
    return f"{local_part}@{mail_domain(settings)}"


def relay(settings: Settings) -> MailRelay:
    if settings.is_aws:
        return MailRelay(ses_smtp_host(settings.region), SES_SMTP_PORT, starttls=True, authenticated=True)
    return MailRelay(MAILPIT, MAILPIT_SMTP_PORT, starttls=False, authenticated=False)


def mailpit_spec(memory_mb: int) -> ServiceSpec:
    """The local stack's mail catcher: SMTP on the Docker network, every message in its web UI (nothing leaves)."""
    return ServiceSpec(
        name=MAILPIT, image=images.MAILPIT, memory_mb=memory_mb,
        env={"MP_MAX_MESSAGES": "500", "MP_SMTP_BIND_ADDR": f"0.0.0.0:{MAILPIT_SMTP_PORT}",
             "MP_UI_BIND_ADDR": f"0.0.0.0:{MAILPIT_WEB_PORT}"},
        healthcheck=Healthcheck(("CMD", "/mailpit", "readyz"), interval="15s", start_period="10s"),
        route=Route(SUBDOMAIN, MAILPIT_WEB_PORT, health_path="/readyz", admin_ui=True),
    )
