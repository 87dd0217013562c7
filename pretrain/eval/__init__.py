"""Classification evaluations of a pretrained backbone: kNN, linear protocol, semi-supervised."""
