"""Lightning callbacks: pictures over training, and guards that stop a broken run early."""
