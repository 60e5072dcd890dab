"""The verdicts a model with a defect class gives, as the strings every output carries (no heavy imports: the UI
modules, the batch rows and the API all read them)."""

OK, DEFECT = "OK", "DEFECT"
#: A photo the guard says nobody can judge (inspectkit/guard.py); ``unusable_reason`` says why.
UNUSABLE = "UNUSABLE"
