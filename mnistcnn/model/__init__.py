"""The model: architectures declared as data and counted without torch (arch), built as
nn.Modules (models), and loaded from a model card's weights (weights). Imports only mnistcnn.outputs."""
