"""The public names of ``orchestra`` are exactly these; changing them is a deliberate act."""

import orchestra


def test_all_exports_exist_and_are_pinned():
    assert sorted(orchestra.__all__) == [
        "AlreadyDecided", "AuthError", "Conflict", "ConnectorError", "Forbidden", "GuardrailBlocked", "InputError",
        "NotAssignee", "NotFound", "OrchestraError", "SpecError", "Step", "StepCall", "StepError", "StepTimeout",
        "TaskExpired", "TemplateError", "WaitError", "WorkflowSpec", "__version__", "load_spec", "step",
    ]
    for name in orchestra.__all__:
        assert hasattr(orchestra, name), name


def test_step_functions_register_through_the_public_decorator():
    @orchestra.step
    def shout(text: str) -> str:
        return text.upper()

    from orchestra.steps.task import resolve

    assert resolve(f"{__name__}.shout")("hi") == "HI"
