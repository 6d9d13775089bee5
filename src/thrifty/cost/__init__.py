"""thrifty cost: GPU catalog, model shapes, memory fit, throughput model, traffic to dollars."""
