"""What makes the rehearsal fast must not change what it checks (issue 20): pulumi_aws's subpackages loaded lazily
export exactly the eager package's names and classes; botocore's models parsed once per process serve every loader;
moto's instance type offerings read per region still refuse what the region does not offer; KMS keys made without
their private key up front still sign and verify."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import botocore.loaders
import pytest

from rehearsal import lazy_provider
from rehearsal.emulated import _aws_managed_policies, aws_managed_policy, emulated_account

EAGER_NAMES = (
    "import json, pulumi_aws.{package} as m; "
    "print(json.dumps(sorted(n for n, v in vars(m).items() if not n.startswith('_') and not isinstance(v, type(json)))))"
)


@pytest.mark.parametrize("package", ["ec2", "iam", "s3"])
def test_a_lazy_subpackage_exports_what_the_eager_one_does(package: str) -> None:
    """The names the generated __init__ would define, compared with a fresh interpreter importing it eagerly."""
    eager = subprocess.run([sys.executable, "-c", EAGER_NAMES.format(package=package)], capture_output=True, text=True,
                           check=True, env={"PYTHONPATH": ""})
    lazy_provider.install()
    module = importlib.import_module(f"pulumi_aws.{package}")
    exported = set(module.__lazy_exports__)
    names_only_eager = set(json.loads(eager.stdout)) - exported - {name for name in vars(module) if not name.startswith("_")}
    assert names_only_eager == set()
    assert len(exported) > 20


def test_a_lazy_name_is_the_providers_own_class_and_an_unknown_one_is_an_attribute_error() -> None:
    lazy_provider.install()
    import pulumi_aws as aws

    assert aws.ec2.Instance is importlib.import_module("pulumi_aws.ec2.instance").Instance
    assert aws.ec2.InstanceMetadataOptionsArgs is importlib.import_module("pulumi_aws.ec2._inputs").InstanceMetadataOptionsArgs
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchResource'"):
        _ = getattr(aws.ec2, "NoSuchResource")  # noqa: B009 (a name the type checker rightly does not know)


def test_every_loader_gets_one_parse_of_a_model_inside_the_emulated_account() -> None:
    before = botocore.loaders.JSONFileLoader.load_file  # the test session installs the same cache (conftest.py)
    with emulated_account("eu-west-1", None):
        first = botocore.loaders.create_loader().load_service_model("ec2", "service-2")
        second = botocore.loaders.create_loader().load_service_model("ec2", "service-2")
        assert first is second
        assert "RunInstances" in first["operations"]
    assert botocore.loaders.JSONFileLoader.load_file is before  # the account leaves botocore as it found it


def test_every_loader_is_told_the_services_botocore_has_inside_the_emulated_account() -> None:
    listing_before = botocore.loaders.Loader.list_available_services
    data = Path(botocore.__file__).parent / "data"
    for type_name in ("service-2", "endpoint-rule-set-1"):
        # botocore's own answer, found the way its listing looks (the test session already shares the listings)
        expected = sorted(service.name for service in data.iterdir() if list(service.glob(f"*/{type_name}.json*")))
        with emulated_account("eu-west-1", None):
            first = botocore.loaders.create_loader().list_available_services(type_name)
            first.append("not-a-service")  # a caller's change stays its own
            assert botocore.loaders.create_loader().list_available_services(type_name) == expected
        assert first[:-1] == expected and "ec2" in expected
    assert botocore.loaders.Loader.list_available_services is listing_before


def _ec2(region: str) -> Any:
    return boto3.client("ec2", region_name=region)


@pytest.mark.parametrize("region", ["eu-west-1", "us-east-1"])
def test_instance_type_offerings_are_moto_s_own_for_each_region(region: str) -> None:
    from moto.utilities.utils import load_resource

    with emulated_account(region, None):
        answered = _ec2(region).describe_instance_type_offerings(LocationType="region")["InstanceTypeOfferings"]
        expected = load_resource(f"ec2/resources/instance_type_offerings/region/{region}.json")
        assert sorted(o["InstanceType"] for o in answered) == sorted(o["InstanceType"] for o in expected)
        assert {o["LocationType"] for o in answered} == {"region"}


def test_the_offerings_read_per_region_still_decide_moto_s_instance_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks instance types only when told to (its setting, off in the rehearsal): on, the lazily read offerings
    refuse a type the region does not offer and an availability zone of another region, as moto's full data would."""
    import moto.settings

    monkeypatch.setattr(moto.settings, "EC2_ENABLE_INSTANCE_TYPE_VALIDATION", True)
    with emulated_account("eu-west-1", None):
        ec2 = _ec2("eu-west-1")
        image = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
        with pytest.raises(botocore.exceptions.ClientError, match="InvalidInstanceType"):
            ec2.run_instances(ImageId=image, InstanceType="t3.notatype", MinCount=1, MaxCount=1)
        with pytest.raises(botocore.exceptions.ClientError, match="InvalidParameterValue"):
            ec2.run_instances(ImageId=image, InstanceType="t3.small", MinCount=1, MaxCount=1,
                              Placement={"AvailabilityZone": "us-east-1a"})
        launched = ec2.run_instances(ImageId=image, InstanceType="t3.small", MinCount=1, MaxCount=1,
                                     Placement={"AvailabilityZone": "eu-west-1b"})
        assert launched["Instances"][0]["Placement"]["AvailabilityZone"] == "eu-west-1b"


def test_kms_keys_still_sign_verify_and_encrypt() -> None:
    with emulated_account("eu-west-1", None):
        kms = boto3.client("kms", region_name="eu-west-1")
        signing = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        signature = kms.sign(KeyId=signing, Message=b"forge", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
        assert kms.verify(KeyId=signing, Message=b"forge", Signature=signature,
                          SigningAlgorithm="RSASSA_PSS_SHA_256")["SignatureValid"]
        assert kms.get_public_key(KeyId=signing)["PublicKey"]
        symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=symmetric, Plaintext=b"secret")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"


def test_a_managed_policy_found_by_its_key_is_the_one_in_moto_s_whole_data() -> None:
    """aws_managed_policy() parses one entry of moto's managed policies instead of all 1,300: every 25th entry, and the
    ones the program and the CI roles attach, come out as the whole document has them; a name AWS lacks is None."""
    everything = _aws_managed_policies()
    names = [*sorted(everything)[::25], "PowerUserAccess", "ReadOnlyAccess", "AWSDataLifecycleManagerServiceRole"]
    for name in names:
        assert aws_managed_policy(name) == everything[name], name
    assert aws_managed_policy("NoSuchPolicyAnywhere") is None
    assert aws_managed_policy("Document") is None  # an object key of every entry, two spaces deep: never an entry itself
