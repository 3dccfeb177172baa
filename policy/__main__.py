"""forgestack policy pack: `pulumi preview --policy-pack policy` (the rules live in forgestack_rules.py)."""

from pack import policies
from pulumi_policy import PolicyPack

PolicyPack(name="forgestack", policies=policies())
