"""The serving layer: MNIST-style preprocessing of real images, classifiers, `predict`, the web server.

Pillow and FastAPI are imported only here.
"""
