"""One route module per resource; each is thin and calls the service layer."""
