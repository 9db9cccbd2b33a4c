"""The API's request and response models: handlers parse with them and the OpenAPI document is made from them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, create_model
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from app.db.queries.tasks import TASK_SORTS
from app.errors import ValidationError
from app.ids import MAX_ID, parse_int
from app.scheduling.validation import (
    CONFIG_FIELDS,
    MAX_INTERVAL_STEPS,
    NAME,
    PRIORITY_RANGE,
    REQUIRED_CONFIG,
    REQUIREMENT_MAX,
    REQUIREMENTS,
    TASK_TYPES,
    ConfigField,
)
from app.statuses import TASK_STATUSES

IntervalText = Annotated[str, Field(min_length=1, max_length=64, description="N steps, or a duration such as 90s, 5 min, 1h30m")]

MAX_PAGE = 200
MAX_OFFSET = 10**9
MAX_PAUSE_SECONDS = 366 * 86400


class Schema(BaseModel):
    """Every schema builds its validator on first use, not at import: the agent starts faster and smaller."""

    model_config = ConfigDict(defer_build=True)


Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class WholeNumber:
    """An integer written in ASCII digits (optional '-') within [low, high]; the bounds are the schema's too."""

    low: int
    high: int
    strip: bool = True  # query values may carry spaces; a URL's id may not

    def parse(self, value: Any) -> int:
        """The number, or a PydanticCustomError that names what is wrong."""
        text = value.strip() if isinstance(value, str) and self.strip else value
        number = parse_int(text, -MAX_ID, MAX_ID) if isinstance(text, str) else None
        if number is None:
            raise PydanticCustomError("whole_number", "must be a whole number")
        if not self.low <= number <= self.high:
            raise PydanticCustomError("between", "must be between {low} and {high}", {"low": self.low, "high": self.high})
        return number

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.parse, core_schema.int_schema(ge=self.low, le=self.high))


@dataclass(frozen=True)
class OneOf:
    """A text that must be one of `choices`, documented as an enum."""

    choices: tuple[str, ...]

    def check(self, value: str) -> str:
        """The value, or a PydanticCustomError listing the choices."""
        if value not in self.choices:
            named = ", ".join(self.choices[:-1]) + f" or {self.choices[-1]}" if len(self.choices) > 1 else self.choices[0]
            raise PydanticCustomError("one_of", "must be {named}", {"named": named})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, core_schema.str_schema())

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "enum": list(self.choices)}


def _blank_is_none(value: Any) -> Any:
    return value or None


Blank = BeforeValidator(_blank_is_none)  # an empty query value means the parameter is absent
PageSize = Annotated[int, WholeNumber(1, MAX_PAGE)]
Offset = Annotated[int, WholeNumber(0, MAX_OFFSET)]
Id = Annotated[int, WholeNumber(1, MAX_ID)]
Status = Annotated[str, OneOf(TASK_STATUSES)]


class Query(Schema):
    """A query string: unknown parameters are ignored, as browsers and proxies add their own."""

    model_config = ConfigDict(defer_build=True, extra="ignore", frozen=True)


class Body(Schema):
    """A JSON body: exact JSON types, and a field it does not know is an error."""

    model_config = ConfigDict(defer_build=True, extra="forbid", strict=True, frozen=True)


# ----- query strings -----


class TaskListQuery(Query):
    """GET /api/v1/tasks."""

    status: Annotated[Status | None, Blank] = Field(None, description="only tasks in this status")
    type: Annotated[str | None, Blank] = Field(None, description="only tasks of this type")
    sort: Annotated[str, OneOf(tuple(TASK_SORTS))] = Field("priority", description="order of the tasks")
    limit: PageSize = Field(50, description="page size")
    offset: Offset = Field(0, description="rows to skip")


class ClientListQuery(Query):
    """GET /api/v1/clients."""

    limit: PageSize = Field(100, description="page size")
    offset: Offset = Field(0, description="rows to skip")


class ModelListQuery(ClientListQuery):
    """GET /api/v1/models."""

    name: Annotated[str | None, Blank] = Field(None, description="only versions of this model")


class CurveQuery(Query):
    """GET /api/v1/tasks/{task_id}/curve."""

    after: Annotated[int, WholeNumber(0, 2**62)] = Field(0, description="only points after this id")


class LogsQuery(Query):
    """GET /api/v1/tasks/{task_id}/logs."""

    limit: Annotated[int, WholeNumber(1, 1000)] = Field(200, description="newest lines")


class EventsQuery(Query):
    """GET /api/v1/events."""

    task: Annotated[Id | None, Blank] = Field(None, description="also stream this task")


# ----- paths (a value that cannot name anything is a 404) -----


class TaskPath(Query):
    """A task's URL."""

    task_id: Annotated[int, WholeNumber(1, MAX_ID, strip=False)]


class ClientPath(Query):
    """A client's URL."""

    client_id: str = Field(min_length=1)


# ----- bodies -----


class PriorityBody(Body):
    """POST /api/v1/tasks/{task_id}/priority."""

    priority: int = Field(ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1])


class PauseBody(Body):
    """POST /api/v1/pause (the body may be left out)."""

    seconds: float | None = Field(None, gt=0, le=MAX_PAUSE_SECONDS, allow_inf_nan=False,
                                  description="resume by itself after this many seconds (absent: until resumed)")
    finish_current: bool = Field(False, description="finish the task now running, then pause")


# The task body is documented from validation.py's own tables (CONFIG_FIELDS, REQUIREMENTS, the bounds) but
# never validated with these models: validate_task is the one validator of a task, for the API, `aifarm
# submit` and the form, and it names every problem at once. The document is therefore never stricter than it.

def _config_annotation(spec: ConfigField) -> Any:
    bounds = Field(ge=spec.minimum, le=spec.maximum)
    if spec.kind == "name":
        return Annotated[str, Field(pattern=NAME.pattern.replace("\\Z", "$"))]
    if spec.kind == "int":
        return Annotated[int, bounds]
    if spec.kind == "optional_int":
        return Annotated[int, bounds] | None
    if spec.kind == "float":
        return Annotated[float, bounds]
    if spec.kind == "optional_float":
        return Annotated[float, bounds] | None
    if spec.kind == "bool":
        return bool
    if spec.kind == "str":
        return Annotated[str, OneOf(spec.choices)]
    if spec.kind == "interval":
        return Annotated[int, Field(ge=1, le=MAX_INTERVAL_STEPS)] | IntervalText
    if spec.kind == "options":
        return dict[str, Any]
    return str  # "model", "dataset": a recipe of the agent's catalog (`aifarm recipes`)


def _config_field(name: str, spec: ConfigField) -> tuple[Any, Any]:
    if name in REQUIRED_CONFIG:
        return _config_annotation(spec), Field(description=spec.help)
    return _config_annotation(spec), Field(spec.default, description=spec.help)


TaskConfig = create_model(  # type: ignore[call-overload]
    "TaskConfig", __config__=ConfigDict(defer_build=True, extra="forbid"), __doc__="A task's training configuration.",
    **{name: _config_field(name, spec) for name, spec in CONFIG_FIELDS.items()})

TaskRequirements = create_model(  # type: ignore[call-overload]
    "TaskRequirements", __config__=ConfigDict(defer_build=True, extra="forbid"), __doc__="What a client needs to claim the task.",
    **{key: (Annotated[int, Field(ge=0, le=REQUIREMENT_MAX)], 0) for key in REQUIREMENTS})


class TaskSubmission(Schema):
    """POST /api/v1/tasks: a task as `aifarm submit` reads it (documented; validate_task validates)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    type: Annotated[str, OneOf(TASK_TYPES)] = TASK_TYPES[0]
    priority: int = Field(0, ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1])
    requirements: TaskRequirements = Field(default_factory=TaskRequirements)  # type: ignore[valid-type]
    config: TaskConfig  # type: ignore[valid-type]


# ----- responses (documented; extra keys are allowed) -----


class ErrorDetail(Schema):
    """What went wrong."""

    code: str
    message: str
    fields: dict[str, str] = Field(description="each bad field and what is wrong with it")


class Error(Schema):
    """The body of every API error."""

    error: ErrorDetail


class DonationState(Schema):
    """Paused or donating."""

    paused: bool
    until: str | None
    finish_current: bool
    summary: str
    on_hold: list[str]


class AgentStatus(Schema):
    """This agent."""

    client_id: str
    hostname: str
    farm_name: str
    version: str
    database_ok: bool
    paused: bool
    dashboard_url: str
    peer_port: int | None
    started_at: str
    donation: DonationState
    peer_count: int
    loops: dict[str, str]


class Task(Schema):
    """A task row."""

    id: int
    type: str
    status: Status
    priority: int | None
    requirements: dict[str, Any]
    config: dict[str, Any] | None
    client_id: str | None
    created_at: str
    updated_at: str
    waiting_for: str | None = Field(None, description="why a pending task is not claimed (null: it can be)")


class TaskDetail(Task):
    """A task with its run state and ranks."""

    run: dict[str, Any] | None
    assignments: list[dict[str, Any]]
    available_ranks: list[int]


class TaskList(Schema):
    """A page of tasks."""

    tasks: list[Task]
    total: int
    limit: int
    offset: int


class Stopping(Schema):
    """The agent is stopping."""

    stopping: bool
    pid: int


class LoginLink(Schema):
    """A one-time sign-in link."""

    url: str


# ----- parsing -----

_MESSAGES = {
    "missing": "is required", "extra_forbidden": "unknown field", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number", "bool_type": "must be true or false", "float_type": "must be a number",
    "finite_number": "must be a finite number", "string_type": "must be a text", "model_type": "must be a JSON object",
    "greater_than": "must be greater than {gt}", "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}", "less_than_equal": "must be at most {le}",
}


def problems(exc: pydantic.ValidationError, whole: str) -> dict[str, str]:
    """Each bad field (dotted path; `whole` for the value itself) and what is wrong with it, in our words."""
    out: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"]) or whole
        template = _MESSAGES.get(error["type"])
        context = {key: f"{value:g}" if isinstance(value, float) else value for key, value in error.get("ctx", {}).items()}
        out.setdefault(path, template.format(**context) if template else error["msg"])
    return out


def _refuse(found: dict[str, str], what: str) -> ValidationError:
    listed = "; ".join(f"{what} {path} {message}" for path, message in found.items())
    return ValidationError(listed, found)


def parse_query(model: type[Model], query: Mapping[str, str]) -> Model:
    """The query string as `model`, or ValidationError (400) naming each bad parameter."""
    try:
        return model.model_validate({key: query[key] for key in query})
    except pydantic.ValidationError as exc:
        raise _refuse(problems(exc, "query"), "query parameter") from None


def parse_body(model: type[Model], body: Any) -> Model:
    """A decoded JSON body as `model`, or ValidationError (400) naming each bad field."""
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        raise _refuse(problems(exc, "body"), "field") from None


def parse_path(model: type[Model], match_info: Mapping[str, str], not_found: Callable[[], Exception]) -> Model:
    """The URL's variables as `model`; a value that cannot name anything raises `not_found()`."""
    try:
        return model.model_validate(dict(match_info))
    except pydantic.ValidationError:
        raise not_found() from None
