"""What a digit image is, as MNIST defines it: every module takes its shape from here."""

IMAGE_SIDE = 28                      # pixels per row and per column
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE   # 784, the length of a flattened image
DIGITS = tuple(range(10))            # the classes
N_CLASSES = len(DIGITS)
