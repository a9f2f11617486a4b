from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProgressRequest(_message.Message):
    __slots__ = ("user_id", "since", "until", "limit")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    since: float
    until: float
    limit: int
    def __init__(self, user_id: _Optional[str] = ..., since: _Optional[float] = ..., until: _Optional[float] = ..., limit: _Optional[int] = ...) -> None: ...

class SessionScore(_message.Message):
    __slots__ = ("session_id", "edge_id", "started_at", "results", "pitch_accuracy", "rhythm_accuracy", "dynamics_range", "overall_score", "duration_s")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PITCH_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    RHYTHM_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    DYNAMICS_RANGE_FIELD_NUMBER: _ClassVar[int]
    OVERALL_SCORE_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    edge_id: str
    started_at: float
    results: int
    pitch_accuracy: float
    rhythm_accuracy: float
    dynamics_range: float
    overall_score: float
    duration_s: float
    def __init__(self, session_id: _Optional[str] = ..., edge_id: _Optional[str] = ..., started_at: _Optional[float] = ..., results: _Optional[int] = ..., pitch_accuracy: _Optional[float] = ..., rhythm_accuracy: _Optional[float] = ..., dynamics_range: _Optional[float] = ..., overall_score: _Optional[float] = ..., duration_s: _Optional[float] = ...) -> None: ...

class WeekTrend(_message.Message):
    __slots__ = ("week_start", "sessions", "avg_pitch_accuracy", "avg_rhythm_accuracy", "avg_dynamics_range", "avg_overall_score", "practice_s")
    WEEK_START_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    AVG_PITCH_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    AVG_RHYTHM_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    AVG_DYNAMICS_RANGE_FIELD_NUMBER: _ClassVar[int]
    AVG_OVERALL_SCORE_FIELD_NUMBER: _ClassVar[int]
    PRACTICE_S_FIELD_NUMBER: _ClassVar[int]
    week_start: str
    sessions: int
    avg_pitch_accuracy: float
    avg_rhythm_accuracy: float
    avg_dynamics_range: float
    avg_overall_score: float
    practice_s: float
    def __init__(self, week_start: _Optional[str] = ..., sessions: _Optional[int] = ..., avg_pitch_accuracy: _Optional[float] = ..., avg_rhythm_accuracy: _Optional[float] = ..., avg_dynamics_range: _Optional[float] = ..., avg_overall_score: _Optional[float] = ..., practice_s: _Optional[float] = ...) -> None: ...

class ProgressReply(_message.Message):
    __slots__ = ("user_id", "sessions", "weeks")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    WEEKS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    sessions: _containers.RepeatedCompositeFieldContainer[SessionScore]
    weeks: _containers.RepeatedCompositeFieldContainer[WeekTrend]
    def __init__(self, user_id: _Optional[str] = ..., sessions: _Optional[_Iterable[_Union[SessionScore, _Mapping]]] = ..., weeks: _Optional[_Iterable[_Union[WeekTrend, _Mapping]]] = ...) -> None: ...

class SessionDetailRequest(_message.Message):
    __slots__ = ("session_id", "recent_events")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RECENT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    recent_events: int
    def __init__(self, session_id: _Optional[str] = ..., recent_events: _Optional[int] = ...) -> None: ...

class SessionDetail(_message.Message):
    __slots__ = ("session_id", "user_id", "edge_id", "started_at", "last_result_at", "results", "notes", "verdicts", "mean_abs_timing_ms", "scores", "summary_json", "completed_at", "recent_events_json")
    class VerdictsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_RESULT_AT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_TIMING_MS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    RECENT_EVENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user_id: str
    edge_id: str
    started_at: float
    last_result_at: float
    results: int
    notes: int
    verdicts: _containers.ScalarMap[str, int]
    mean_abs_timing_ms: float
    scores: SessionScore
    summary_json: str
    completed_at: float
    recent_events_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., edge_id: _Optional[str] = ..., started_at: _Optional[float] = ..., last_result_at: _Optional[float] = ..., results: _Optional[int] = ..., notes: _Optional[int] = ..., verdicts: _Optional[_Mapping[str, int]] = ..., mean_abs_timing_ms: _Optional[float] = ..., scores: _Optional[_Union[SessionScore, _Mapping]] = ..., summary_json: _Optional[str] = ..., completed_at: _Optional[float] = ..., recent_events_json: _Optional[_Iterable[str]] = ...) -> None: ...
