"""Planning a run before any job: the experiment grid of a workflow config, its validation, the shares of work the
savings leave, and the cost model (``densepure estimate``)."""
