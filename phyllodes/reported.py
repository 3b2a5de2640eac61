"""The paper's reported numbers, in one place (Abir et al., IEEE BSN 2025, arXiv:2509.00213).

Only values stated in the paper's abstract/results as summarised by the study team are
recorded; anything not listed here is shown as "not reported" rather than guessed.
"""

from __future__ import annotations

PAPER = ("Abir F.F., Daly A.E., Anderman K., Ozmen T., Brattain L.J. Multimodal Deep Learning "
         "for Phyllodes Tumor Classification from Ultrasound and Clinical Data. IEEE BSN 2025 "
         "(arXiv:2509.00213)")
#: The paper's cohort: 81 subjects, MGH, benign vs borderline/malignant phyllodes tumours.
PAPER_COHORT = "mgh-phyllodes"

#: Table 3 of the paper: AUC of each modality (multimodal = ConvNeXt, concatenation fusion).
MODALITY_AUC = {"clinical": 0.7846, "image": 0.8919, "multimodal": 0.9427}

#: Encoder comparison (multimodal): the values the paper reports for the two leading encoders.
ENCODER_METRICS = {
    "convnext_tiny": {"auc": 0.9427, "f1": 0.6720},
    "resnet18": {"auc": 0.9349, "f1": 0.7294},
}

#: Share of the multimodal prediction carried by the image branch.
IMAGE_SHARE = 0.63


def comparison_note(cohort_name: str) -> str:
    """A plain statement of whether this cohort's numbers are comparable with the paper's."""
    if cohort_name == PAPER_COHORT:
        return "Same cohort as the paper: the columns are directly comparable."
    return (f"Cohort '{cohort_name}' is not the paper's 81-subject MGH phyllodes cohort: the "
            "paper's values are shown for reference only and are not comparable.")

#: The study's own goals for the bundled cohort (the issues that set the recipe's targets; not
#: the paper's numbers): pooled subject AUC of the image-only and the multimodal model, and
#: the CAM energy lift over chance.
STUDY_TARGETS = {"image_auc": 0.84, "multimodal_auc": 0.90, "cam_lift": 1.5}
