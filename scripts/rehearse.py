#!/usr/bin/env python3
"""Rehearse a stack offline: run the real __main__.py with a stack file's config against an emulated AWS.

    python scripts/rehearse.py --stack dev              # resource tree with emulated ids, outputs, checks
    python scripts/rehearse.py --stack prod --json      # one JSON document
    python scripts/rehearse.py --stack prod --graph mermaid   # architecture diagram from the resources
    python scripts/rehearse.py --stack dev --stack-file my-dev.yaml
    python scripts/rehearse.py --stack prod --set topology=ha   # a config value changed for this run

Needs no AWS account, no Pulumi CLI and no Docker engine. Every AWS resource becomes the boto3
calls the provider would make against moto in this process (rehearsal/emulated.py), so a request
AWS would refuse fails here too; Data Lifecycle Manager, which moto lacks, is validated against
botocore's service model and listed as such. Docker resources are checked (pinned images, port
clashes, networks, uploads). The local stack has no AWS resources and runs under plain mocks.
Exit codes: 0 ok, 1 a check failed or the program broke, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # A rehearsal is a process of a few seconds that ends in os._exit (below). Python's cyclic collector would walk the
    # millions of long-lived objects moto, botocore and Pulumi load, again and again (a second of a 3.8 s run), to free
    # a few MB: measured max RSS 252 MB with it, 257 MB without.
    gc.disable()

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import botocore.exceptions
import pulumi

from components.constants import DATA_MOUNT
from components.settings import ConfigError
from policy.forgestack_rules import PINNED_IMAGE, Report, evaluate
from rehearsal.emulated import EmulatedAccount, emulated_account, rehearse, stack_region
from rehearsal.engine import HA_OVERRIDES, STACKS, ProgramRun, Registered, policy_view, run_program, stack_config
from rehearsal.graph import mermaid

# The program's modules (imported from here on) are compiled once and cached (__pycache__, ignored by git), even where
# the environment says not to (PYTHONDONTWRITEBYTECODE): compiling them on every rehearsal costs a fifth of a second.
sys.dont_write_bytecode = False

KEY_PROPERTIES = {
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone"),
    "aws:ec2/instance:Instance": ("instanceType",),
    "aws:ebs/volume:Volume": ("size", "type", "encrypted"),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": ("fromPort", "cidrIpv4"),
    "aws:route53/record:Record": ("name", "type"),
    "docker:index/container:Container": ("name",),
    "docker:index/remoteImage:RemoteImage": ("name",),
}


def check_docker(run: ProgramRun) -> list[str]:
    """What Docker would refuse or what would break at run time, found before anything runs."""
    problems = []
    for image in run.of_type("docker:index/remoteImage:RemoteImage"):
        if not PINNED_IMAGE.match(image.inputs["name"]):
            problems.append(f"image {image.inputs['name']} is not pinned to an exact tag")
    bindings = Counter(
        (port.get("ip"), int(port["external"]))
        for container in run.of_type("docker:index/container:Container")
        for port in container.inputs.get("ports") or []
    )
    problems += [f"host port {port} on {ip} is published by {count} containers" for (ip, port), count in bindings.items() if count > 1]
    networks = {network.inputs["name"] for network in run.of_type("docker:index/network:Network")}
    volumes = {volume.inputs["name"] for volume in run.of_type("docker:index/volume:Volume")}
    for container in run.of_type("docker:index/container:Container"):
        name = container.inputs["name"]
        for attachment in container.inputs.get("networksAdvanced") or []:
            if attachment["name"] not in networks:
                problems.append(f"{name}: network {attachment['name']} does not exist")
        for mount in container.inputs.get("volumes") or []:
            if mount.get("volumeName") and mount["volumeName"] not in volumes:
                problems.append(f"{name}: volume {mount['volumeName']} is not declared")
            host_path = str(mount.get("hostPath") or "")
            if host_path and not host_path.startswith(f"{DATA_MOUNT}/") and not mount.get("readOnly"):
                problems.append(f"{name}: host path {host_path} outside the data volume is mounted writable")
        for upload in container.inputs.get("uploads") or []:
            if not upload.get("content"):
                problems.append(f"{name}: uploaded file {upload['file']} is empty")
    return problems


def _properties(resource: Registered) -> str:
    keys = KEY_PROPERTIES.get(resource.type, ())
    return " ".join(f"{key}={resource.inputs.get(key)}" for key in keys if resource.inputs.get(key) is not None)


def print_tree(run: ProgramRun) -> None:
    children: dict[str, list[Registered]] = {}
    for resource in run.resources:
        children.setdefault(resource.parent, []).append(resource)

    def show(parent_urn: str, depth: int) -> None:
        for resource in children.get(parent_urn, []):
            protected = " [protected]" if resource.protect else ""
            print(f"{'  ' * depth}{resource.type}  {resource.name}  id={resource.id}{protected}  {_properties(resource)}".rstrip())
            show(resource.urn, depth + 1)

    roots = [urn for urn in children if urn not in {r.urn for r in run.resources}]
    for root in roots:
        show(root, 0)


def masked_outputs(run: ProgramRun) -> dict[str, Any]:
    return {name: "[secret]" if name in run.secret_outputs else value for name, value in sorted(run.outputs.items())}


def policy_summary(report: Report) -> dict[str, list[str]]:
    return {
        "mandatory": [f"{v.rule}: {v.resource}: {v.message}" for v in report.mandatory],
        "advisory": [f"{v.rule}: {v.resource}: {v.message}" for v in report.advisory],
        "accepted": [f"{v.rule}: {v.resource}: {v.accepted}" for v in report.accepted],
    }


def uses_aws(config: dict[str, str]) -> bool:
    return config.get("forgestack:platform", "aws") == "aws"


def run_stack(stack: str, config: dict[str, str]) -> tuple[ProgramRun, list[str]]:
    """The AWS stacks against a fresh emulated account; the local stack, which has no AWS, under plain mocks."""
    # A failed registration also leaves asyncio's "exception never retrieved" reports; the one line below says it all.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    if not uses_aws(config):
        print(f"rehearse: running __main__.py for stack {stack} under mocks (no AWS in this stack)", file=sys.stderr)
        return run_program(stack, config), []
    print(f"rehearse: running __main__.py for stack {stack} against an emulated AWS account (moto)", file=sys.stderr)
    account: EmulatedAccount
    with emulated_account(stack_region(config), config.get("forgestack:hostedZone")) as account:
        run = rehearse(stack, config, account)
    return run, account.validated_only


def add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value for this run, e.g. topology=ha (forgestack: is implied; topology=ha also "
                             "clears ssoOrganization, which ha does not build); repeatable")


def set_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    """--set KEY=VALUE items as config keys (forgestack: implied); a malformed item is a usage error."""
    overrides = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            parser.error(f"--set {item!r}: expected KEY=VALUE such as topology=ha")
        overrides[key if ":" in key else f"forgestack:{key}"] = value
    if overrides.get("forgestack:topology") == "ha":  # the ha variant of a stack file, unless a key says otherwise
        overrides = {**HA_OVERRIDES, **overrides}
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stack", required=True, choices=STACKS, help="stack to rehearse")
    parser.add_argument("--stack-file", type=Path, help="use this stack file instead of Pulumi.<stack>.yaml")
    add_set_option(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON document instead of the tree")
    output.add_argument("--graph", choices=["mermaid"], help="print an architecture diagram instead of the tree")
    args = parser.parse_args(argv)

    overrides = set_overrides(parser, args.set)
    try:
        config = stack_config(args.stack, overrides, stack_file=args.stack_file)
        run, validated_only = run_stack(args.stack, config)
    except ConfigError as error:
        print(f"rehearse: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError, pulumi.RunError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        one_line = " ".join(str(error).split())
        print(f"rehearse: {args.stack}: {one_line}", file=sys.stderr)
        return 1

    policy = evaluate(policy_view(run))
    problems = check_docker(run) + [f"policy {v.rule} ({v.enforcement}): {v.resource}: {v.message}" for v in policy.mandatory]
    if args.graph:
        print(mermaid(run), end="")
        for problem in problems:
            print(f"rehearse: problem: {problem}", file=sys.stderr)
    elif args.json:
        document = {
            "stack": args.stack,
            "engine": "moto" if uses_aws(config) else "mocks",
            "resources": [{"type": r.type, "name": r.name, "id": r.id, "parent": r.parent, "protect": r.protect}
                          for r in run.resources],
            "validated_not_emulated": validated_only,
            "policy": policy_summary(policy),
            "outputs": masked_outputs(run),
            "problems": problems,
        }
        print(json.dumps(document, indent=2, default=str))
    else:
        print_tree(run)
        print("\noutputs:")
        for name, value in masked_outputs(run).items():
            print(f"  {name} = {value}")
        for violation in policy.advisory:
            print(f"advisory {violation.rule}: {violation.resource}: {violation.message}")
        for violation in policy.accepted:
            print(f"accepted risk {violation.rule}: {violation.resource}: {violation.accepted}")
        for resource in validated_only:
            print(f"validated against botocore's model, not emulated (moto lacks it): {resource}")
        print(f"\n{len(run.resources)} resources; {len(problems)} problems")
        for problem in problems:
            print(f"  problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    code = main()
    # Nothing is left to do but free the emulated account object by object, which took Python 1.7 s at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
