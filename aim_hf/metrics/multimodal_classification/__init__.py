"""The `multimodal_classification` evaluate metric module (`evaluate.load` reads the script of the same name)."""
