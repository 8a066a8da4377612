"""vssflow.core: the engine. Knows interfaces, never concrete plugins.

Flow convention (the only one used anywhere in vssflow):
    t = 0 is noise, t = 1 is data.
    x_t = t * x1 + (1 - t) * x0,   x0 ~ N(0, I)
    target velocity v = dx_t/dt = x1 - x0
A sampler integrates dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data). Adapters to libraries that use
another convention (diffusers' sigma = 1 - t, predicting x0 - x1) convert at their boundary.
"""
