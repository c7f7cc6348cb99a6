"""The class labels: one home for the values every model output, data set, score file and
attention map uses (the bona-fide log-probability is ``log_probs[:, BONAFIDE]``).

Also the label words of the ASVspoof protocol and key files, as the data sets and the evaluation
read them. Plain constants: imported by torch-free code (the evaluation's key reader) too.
"""

BONAFIDE = 1
SPOOF = 0
LABEL_NAMES = {BONAFIDE: "bonafide", SPOOF: "spoof"}
# The label column of whitespace-separated protocol / key files (ASVspoof 2019 / 2021).
PROTOCOL_LABELS = {"bonafide": BONAFIDE, "spoof": SPOOF}
# The label column of CSV metadata (In-the-Wild's meta.csv writes "bona-fide").
CSV_LABELS = {"bona-fide": BONAFIDE, "bonafide": BONAFIDE, "spoof": SPOOF}
