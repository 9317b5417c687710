"""Resize to 224x224, scale to [0, 1], normalize with ImageNet statistics."""
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def preprocess(pixels, width, height):
    """pixels: rows of (r, g, b) bytes, already resized to 224x224."""
    return [[(c / 255.0 - MEAN[i]) / STD[i] for i, c in enumerate(px)] for row in pixels for px in row]
