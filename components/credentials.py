"""Credentials: generated passwords and tokens, kept in one Secrets Manager secret on AWS."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.kms import rotating_key

# Secret JSON key -> generated length. Gitea's SECRET_KEY and INTERNAL_TOKEN are generated once and
# must never change (changing SECRET_KEY makes stored 2FA and OAuth secrets unreadable).
CREDENTIAL_LENGTHS: Final = {
    "postgresPassword": 32,
    "giteaAdminPassword": 24,
    "giteaSecretKey": 64,
    "giteaInternalToken": 96,
    "grafanaAdminPassword": 24,
    "metricsToken": 48,
    "valkeyPassword": 32,
    "webhookSecret": 48,  # HMAC key shared by Gitea's webhooks and the webhook relay
    "droneRpcSecret": 48,
    "portainerAdminPassword": 24,
    "minioRootPassword": 32,  # the local stack's backup store
}
CREDENTIAL_KEYS: Final = tuple(CREDENTIAL_LENGTHS)


@dataclass(frozen=True)
class CredentialsArgs:
    # False on the local stack: the values stay in the Pulumi state (encrypted) only.
    store_in_secrets_manager: bool = True
    protect: bool = False
    # Credentials made elsewhere (the SES SMTP user), kept in the same secret: key -> value.
    extra: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


class Credentials(pulumi.ComponentResource):
    """Random credentials of the forge; on AWS one KMS-encrypted Secrets Manager secret holds them as JSON."""

    values: dict[str, pulumi.Output[str]]
    secret: aws.secretsmanager.Secret | None
    key: aws.kms.Key | None

    def __init__(self, name: str, args: CredentialsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:core:Credentials", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)

        self.values = {}
        for key, length in CREDENTIAL_LENGTHS.items():
            # Letters and digits only: the values go into URLs, env files and ini files unescaped.
            generated = random.RandomPassword(f"{name}-{key}", length=length, special=False, opts=child)
            self.values[key] = pulumi.Output.secret(generated.result)
        for key, value in args.extra.items():
            if key in self.values:
                raise ValueError(f"credential {key} is both generated and given")
            self.values[key] = pulumi.Output.secret(value)

        self.key = None
        self.secret = None
        if args.store_in_secrets_manager:
            self.key = rotating_key(f"{name}-key", "forgestack credentials secret", self, args.protect)
            self.secret = aws.secretsmanager.Secret(
                f"{name}-secret", description="forgestack credentials (JSON)", kms_key_id=self.key.arn,
                opts=stateful,
            )
            aws.secretsmanager.SecretVersion(
                f"{name}-secret-version", secret_id=self.secret.id,
                secret_string=pulumi.Output.secret(pulumi.Output.json_dumps(self.values)),  # type: ignore[arg-type]
                opts=child,
            )

        self.secret_arn: pulumi.Output[str] = self.secret.arn if self.secret else pulumi.Output.from_input("")
        self.key_arn: pulumi.Output[str] = self.key.arn if self.key else pulumi.Output.from_input("")

        self.register_outputs({
            "secretArn": self.secret.arn if self.secret else None,
            "keyArn": self.key.arn if self.key else None,
        })
