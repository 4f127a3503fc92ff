"""The controller's side of the EarlyStopping gRPC contract (Katib's port 6788 service).

Filled as Katib's controller fills it (reference 1.4): ValidateEarlyStoppingSettings
gets only the EarlyStoppingSpec; GetEarlyStoppingRules gets the experiment, every
trial and the DBManager address the service should read observation logs from.
The client works against our service and against Katib's medianstop alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from katib import errors
from katib.api.models import EarlyStoppingRule, EarlyStoppingSpec, Experiment, Trial
from katib.apis.grpc_errors import error_from_rpc
from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.controller.conversion import (
    early_stopping_to_pb,
    experiment_to_pb,
    rule_from_pb,
    trials_for_request,
)

RULES_TIMEOUT_SECONDS = 60.0
VALIDATE_TIMEOUT_SECONDS = 30.0


class EarlyStoppingClient:
    """Calls one EarlyStopping service; errors come back as katib.errors types."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", 256 * 1024 * 1024)]
        )
        self._stub = api_pb2_grpc.EarlyStoppingStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def validate(self, spec: EarlyStoppingSpec) -> None:
        """InvalidArgumentError("ValidateEarlyStoppingSettings Error: ...") for bad settings.

        UNIMPLEMENTED counts as valid, as in Katib's controller.
        """
        request = api_pb2.ValidateEarlyStoppingSettingsRequest(
            early_stopping=early_stopping_to_pb(spec)
        )
        try:
            self._stub.ValidateEarlyStoppingSettings(
                request, timeout=VALIDATE_TIMEOUT_SECONDS, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNKNOWN):
                raise errors.InvalidArgumentError(
                    f"ValidateEarlyStoppingSettings Error: {exc.details()}"
                ) from None
            raise error_from_rpc(exc, "ValidateEarlyStoppingSettings") from None

    def get_rules(
        self, experiment: Experiment, trials: Sequence[Trial], db_manager_address: str
    ) -> list[EarlyStoppingRule]:
        """The rules to attach to every trial of the next batch (possibly none)."""
        request = api_pb2.GetEarlyStoppingRulesRequest(
            experiment=experiment_to_pb(experiment),
            trials=trials_for_request(experiment, trials),
            db_manager_address=db_manager_address,
        )
        try:
            reply = self._stub.GetEarlyStoppingRules(
                request, timeout=RULES_TIMEOUT_SECONDS, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "GetEarlyStoppingRules") from None
        return [rule_from_pb(r) for r in reply.early_stopping_rules]

    def set_trial_status(self, trial_name: str) -> None:
        """Report that a trial was early stopped (what Katib's collector sidecar does)."""
        try:
            self._stub.SetTrialStatus(
                api_pb2.SetTrialStatusRequest(trial_name=trial_name),
                timeout=VALIDATE_TIMEOUT_SECONDS,
                wait_for_ready=True,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "SetTrialStatus") from None
