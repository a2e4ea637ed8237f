"""The draft (timeline) as one typed model, in the backend's short-key form: what the bot reads from the
hosted backend and what localnemo edits.

A draft is ``{"t": [tracks], "m": {...}}``; a track is ``{"tt": type, "sg": [segments]}``; a segment is
``{"d": milliseconds, "m": {...}}`` (nemo-api.md, "The draft"). Every key localnemo uses has a typed field
(``localnemo/timeline.py`` says what each one means); any other key is kept as it came.

Two promises, because the form is not fully documented and grows:

- **Lenient.** A value of the wrong type (a ``"start": "soon"``, a segment that is not an object) never
  fails the parse: the typed field stays unset and the raw value is kept aside, under its own key, so that
  it is written back as it came. Number fields are strict (no ``"5"`` → 5, no ``true`` → 1) for the same
  reason: what cannot be read exactly is kept, not converted.
- **Written back unchanged.** ``to_wire()`` (or any ``model_dump``) gives back exactly what was read:
  unknown keys, the ``in`` spelling, and no ``null`` for a key that was never there. A field that was never
  given and still holds its default is left out; anything assigned (``segment.m.start = 0``) is written.
"""

from __future__ import annotations

from typing import Any, Self, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_serializer,
    model_validator,
)

TRACK_VIDEO = 0
TRACK_AUDIO = 1
TRACK_TEXT = 7

# Strict on purpose: an int stays an int and a float a float when written back.
Number: TypeAlias = StrictInt | StrictFloat


class WireModel(BaseModel):
    """A part of the draft: unknown keys kept, wrong-typed values kept aside, written back as read."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True)

    @model_validator(mode="wrap")
    @classmethod
    def _lenient(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            return handler(data)
        except ValidationError as exc:
            if not isinstance(data, dict):
                raise
            # Nested parts already kept what they could; what still fails here is a key whose value is
            # unusable as a whole (a segment that is a string, a "start" that is not a number).
            bad = {error["loc"][0] for error in exc.errors() if error["loc"] and error["loc"][0] in data}
            if not bad:
                raise
            model = handler({key: value for key, value in data.items() if key not in bad})
            if model.__pydantic_extra__ is not None:
                for key in bad:
                    model.__pydantic_extra__[str(key)] = data[key]
            return model

    def __setattr__(self, name: str, value: Any) -> None:
        field = type(self).model_fields.get(name)
        if field is not None and self.__pydantic_extra__:
            # A typed value replaces a raw one kept aside under the same key.
            self.__pydantic_extra__.pop(field.alias or name, None)
        super().__setattr__(name, value)

    @model_serializer(mode="wrap")
    def _as_read(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name, field in type(self).model_fields.items():
            if name in self.model_fields_set:
                continue
            key = field.alias if field.alias and info.by_alias is not False else name
            if key in data and data[key] in (None, [], {}, field.get_default(call_default_factory=False)):
                # Never given and still empty: it was not in what was read, so it is not written.
                del data[key]
        return data

    def to_wire(self) -> dict[str, Any]:
        """The JSON form, exactly as the backend spells it."""
        return self.model_dump(mode="json", by_alias=True)


class WordTime(WireModel):
    """One word of a caption made from speech: ``w`` the word, ``a``/``b`` when it is said in the uploaded clips
    as they were (like ``cue_in``/``cue_out``), ``at``/``until`` where that is on the timeline now (set when
    the video is cut; absent when the word was cut out)."""

    w: StrictStr = ""
    a: Number = 0
    b: Number = 0
    at: Number | None = None
    until: Number | None = None


class SegmentMeta(WireModel):
    """A segment's ``m``: the keys localnemo reads and writes (see ``localnemo/timeline.py``)."""

    src: StrictStr | None = None
    title: StrictStr | None = None
    text: StrictStr | None = None
    name: StrictStr | None = None
    filename: StrictStr | None = None
    start: Number | None = None
    kind: StrictStr | None = None
    in_: Number | None = Field(default=None, alias="in")
    out: Number | None = None
    speed: Number | None = None
    volume: Number | None = None
    fps: Number | None = None
    width: Number | None = None
    height: Number | None = None
    role: StrictStr | None = None
    duck: StrictBool | None = None
    duck_db: Number | None = None
    duck_threshold_db: Number | None = None
    loop: StrictBool | None = None
    fit: StrictBool | None = None
    cue_in: Number | None = None
    cue_out: Number | None = None
    words: list[WordTime] | None = None


class Segment(WireModel):
    d: Number = 0
    m: SegmentMeta = Field(default_factory=SegmentMeta)


class Track(WireModel):
    tt: StrictInt = TRACK_VIDEO
    sg: list[Segment] = Field(default_factory=list)


class DraftMeta(WireModel):
    """The draft's own ``m``: canvas, output and fades."""

    width: Number | None = None
    height: Number | None = None
    aspect_ratio: StrictStr | None = None
    fit: StrictStr | None = None
    resolution: StrictStr | None = None
    fade_in_ms: Number | None = None
    fade_out_ms: Number | None = None
    notes: list[StrictStr] | None = None
    # How captions look: "bottom", "middle" or "top"; "small", "medium" or "large"; "plain" or "karaoke"
    # (each word lights up as it is said).
    caption_position: StrictStr | None = None
    caption_size: StrictStr | None = None
    caption_style: StrictStr | None = None


class Draft(WireModel):
    """The timeline in the backend's short-key form (``t`` tracks, ``tt`` type, ``sg`` segments)."""

    t: list[Track] = Field(default_factory=list)
    m: DraftMeta = Field(default_factory=DraftMeta)

    @classmethod
    def empty(cls) -> Draft:
        """A new project's draft, written as ``{"t": [], "m": {}}``."""
        return cls(t=[], m=DraftMeta())

    @property
    def exportable(self) -> bool:
        """Exportable once a track has a segment (nemo-api.md)."""
        return any(track.sg for track in self.t)
