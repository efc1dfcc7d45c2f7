"""Domain adaptation (issue 14, in progress): train on a labelled source domain, adapt to an unlabelled target.

The pieces so far: the gradient-reversal layer and Ganin's schedules (reversal.py), and the procedurally
shifted target domains that need no download (trainlab/data/domains.py). The `domain=` and `adaptation=`
config groups and the training step that uses them come next.
"""
