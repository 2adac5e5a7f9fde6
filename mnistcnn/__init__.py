"""mnistcnn: the library behind the pipeline: parameter schema, models, training engine, MNIST files,
tracking, atomic outputs, reproducibility and the merge gate's verdict. stages/ holds the entry points."""
