from sb3_ncdpo.cli import main

if __name__ == "__main__":
    main()
