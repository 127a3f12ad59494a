"""One module per curation stage; each implements `tasks.curation.stage.Stage`."""
