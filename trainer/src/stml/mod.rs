//! The STML algorithm (Kim et al., CVPR 2022), in the parts the paper names.
