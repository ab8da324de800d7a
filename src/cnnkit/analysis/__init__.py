"""Looking at a trained model: inference, summaries, the layer tracer, saliency, explanations, pictures, reports."""
