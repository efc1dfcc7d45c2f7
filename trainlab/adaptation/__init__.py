"""Domain adaptation: train on a labelled source domain, adapt to an unlabelled target (adaptation=dann).

- reversal.py: the gradient-reversal layer and Ganin's lambda and learning-rate schedules;
- dann.py: the domain classifier and the DANN step the Trainer runs (a target batch joins each source batch);
- features.py: the picture of source and target features in 2-D (PCA or t-SNE).
The target domain itself (the `domain` config group) is data: trainlab/data/target.py and data/domains.py.
"""
