"""The sampling controls: a preset picker, and the values behind it (shown on demand); changing one of the
values makes the preset Custom. The preset and the reply length limit are remembered in the settings."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QSpinBox, QWidget

from app.runtime.protocol import SamplingParams
from app.settings import Settings
from app.ui.widgets import named

PRESETS = {
    "Precise": SamplingParams(temperature=0.2, top_k=20, top_p=0.9, min_p=0.05, repeat_penalty=1.1),
    "Balanced": SamplingParams(),
    "Creative": SamplingParams(temperature=1.0, top_k=80, top_p=0.98, min_p=0.02, repeat_penalty=1.05),
}
CUSTOM = "Custom"


class SamplingPanel(QWidget):
    """The values row (hidden until the toggle opens it); `preset` and `toggle` sit in the page's meter
    row."""

    def __init__(self, settings: Settings, save_settings: Callable[[], None]) -> None:
        super().__init__()
        self.setObjectName("samplingPanel")
        self.settings, self.save_settings = settings, save_settings
        self.preset = named(QComboBox(), "samplingPreset")
        self.preset.setAccessibleName("Sampling preset")
        self.preset.addItems([*PRESETS, CUSTOM])
        self.toggle = named(QPushButton("Sampling…"), "samplingToggle")
        self.toggle.setCheckable(True)
        self.temperature = named(QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.05), "temperature")
        self.top_k = named(QSpinBox(minimum=0, maximum=1000), "topK")
        self.top_p = named(QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.01), "topP")
        self.min_p = named(QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.01), "minP")
        self.repeat_penalty = named(
            QDoubleSpinBox(minimum=1.0, maximum=2.0, singleStep=0.05), "repeatPenalty"
        )
        self.max_tokens = named(QSpinBox(minimum=0, maximum=1 << 20, singleStep=256), "maxTokens")
        self.max_tokens.setSpecialValueText("no limit")
        self.max_tokens.setValue(settings.max_tokens)
        self.seed = named(QSpinBox(minimum=-1, maximum=2**31 - 1), "seed")
        self.seed.setSpecialValueText("random")
        self.seed.setValue(-1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for label, box in (("Temperature", self.temperature), ("Top-k", self.top_k), ("Top-p", self.top_p),
                           ("Min-p", self.min_p), ("Repeat penalty", self.repeat_penalty),
                           ("Max tokens", self.max_tokens), ("Seed", self.seed)):  # fmt: skip
            box.setAccessibleName(label)
            layout.addWidget(QLabel(label))
            layout.addWidget(box)
        layout.addStretch(1)
        self.hide()
        self.toggle.toggled.connect(self.setVisible)
        self.preset.currentTextChanged.connect(self._apply_preset)
        preset = settings.sampling_preset
        self.preset.setCurrentText(preset if preset in PRESETS else "Balanced")
        self._apply_preset(self.preset.currentText())
        for box in self._preset_boxes():
            box.valueChanged.connect(self._edited)
        self.max_tokens.valueChanged.connect(self._remember_max_tokens)

    def _preset_boxes(self) -> tuple[QDoubleSpinBox | QSpinBox, ...]:
        return (self.temperature, self.top_k, self.top_p, self.min_p, self.repeat_penalty)

    @Slot(str)
    def _apply_preset(self, name: str) -> None:
        if name not in PRESETS:
            return
        values = PRESETS[name]
        for box in self._preset_boxes():
            box.blockSignals(True)  # filling in a preset is not a custom edit
        self.temperature.setValue(values.temperature)
        self.top_k.setValue(values.top_k)
        self.top_p.setValue(values.top_p)
        self.min_p.setValue(values.min_p)
        self.repeat_penalty.setValue(values.repeat_penalty)
        for box in self._preset_boxes():
            box.blockSignals(False)
        self.settings.sampling_preset = name
        self.save_settings()

    @Slot()
    def _edited(self) -> None:
        self.preset.setCurrentText(CUSTOM)

    @Slot(int)
    def _remember_max_tokens(self, value: int) -> None:
        self.settings.max_tokens = value
        self.save_settings()

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature.value(),
            top_k=self.top_k.value(),
            top_p=self.top_p.value(),
            min_p=self.min_p.value(),
            repeat_penalty=self.repeat_penalty.value(),
            seed=None if self.seed.value() < 0 else self.seed.value(),
        )

    def reply_limit(self) -> int | None:
        """The most tokens a reply may take (None: no limit)."""
        return self.max_tokens.value() or None
