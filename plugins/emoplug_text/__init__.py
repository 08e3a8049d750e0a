"""Bundled text encoders: bert, roberta, xlnet, albert, electra, deberta (Hugging Face
transformers), and the whisper speech recogniser that gives them transcripts made from the
audio (``source: asr``). See docs/text-encoders.md."""

from emoplug import hookimpl


@hookimpl
def emoplug_register_text_encoders(register):
    from emoplug_text.encoders import TEXT_ENCODERS

    for encoder in TEXT_ENCODERS:
        register(encoder)


@hookimpl
def emoplug_register_speech_recognisers(register):
    from emoplug_text.whisper import Whisper

    register(Whisper)
