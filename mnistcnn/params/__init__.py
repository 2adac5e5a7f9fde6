"""params.yaml: its schema (every section a pydantic model), reading it with errors that name
the key (config), and recipes merged over it. Imports only mnistcnn.model (declared architectures)."""
