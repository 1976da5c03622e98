"""Every operation of every service, fuzzed from its own OpenAPI document.

Schemathesis runs its phases against the running service: the documented examples, the
coverage phase (boundary and negative values of every parameter and field), random fuzzing with
positive and negative data, and stateful sequences that feed one response into the next call
(links it infers, such as an order's ``id`` into ``/orders/{order_id}``). A 5xx, a status code
the operation does not declare, a body or header that does not match the declaration, invalid
input that is accepted, or an endpoint that ignores its authentication is a bug in the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemathesis.engine import Status, events, from_schema
from schemathesis.schemas import BaseSchema

from .support import RESULTS, ServiceResult


@dataclass
class _Failure:
    phase: str
    operation: str
    check: str
    title: str
    message: str
    reproduce: str

    def __str__(self) -> str:
        message = self.message.strip().replace("\n", "\n      ")
        return (
            f"[{self.phase}] {self.operation}: {self.check}: {self.title}\n"
            f"      {message}\n      {self.reproduce}"
        )


@dataclass
class _Run:
    failures: list[_Failure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    result: ServiceResult = field(default_factory=ServiceResult)


def _record(run: _Run, event: events.ScenarioFinished) -> None:
    phase = event.phase.value
    recorder = event.recorder
    run.result.requests[phase] = run.result.requests.get(phase, 0) + len(recorder.interactions)
    if phase == "stateful":
        run.result.linked_steps += sum(
            1 for node in recorder.cases.values() if node.transition is not None
        )
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status != Status.FAILURE or check.failure_info is None:
                continue
            failure = check.failure_info.failure
            run.failures.append(
                _Failure(
                    phase=phase,
                    operation=recorder.cases[case_id].value.operation.label,
                    check=check.name,
                    title=failure.title,
                    message=failure.message,
                    reproduce=check.failure_info.code_sample,
                )
            )


def run_schemathesis(schema: BaseSchema) -> _Run:
    """Run every phase against the schema's service; collect failures and errors."""
    run = _Run()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _record(run, event)
            if event.status == Status.ERROR:
                run.errors.append(f"[{event.phase.value}] {event.label}: scenario error")
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"[{event.phase}] {event.label}: {event.info}")
        elif isinstance(event, events.FatalError):
            run.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            run.result.seconds = event.running_time
            run.result.stop_reason = event.stop_reason.value
    return run


def test_every_operation_conforms_to_its_openapi(service_schema: BaseSchema, prefix: str) -> None:
    run = run_schemathesis(service_schema)
    run.result.failures = len(run.failures)
    RESULTS[prefix] = run.result
    unique = sorted({str(f) for f in run.failures})
    report = "\n".join([*run.errors, *unique])
    replay = f"{prefix} (replay with FUZZ_SEED={service_schema.config.seed}):\n{report}"
    assert not run.errors, replay
    assert not run.failures, replay
    assert run.result.stop_reason == "completed"
    assert sum(run.result.requests.values()) > 0
