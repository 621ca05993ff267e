import numpy as np
def pairwise(a):
    n=len(a)
    if n<8:
        res=-0.0
        for x in a: res+=x
        return res
    if n<=128:
        r=list(a[:8])
        i=8
        while i < n-(n%8):
            for j in range(8): r[j]+=a[i+j]
            i+=8
        res=((r[0]+r[1])+(r[2]+r[3]))+((r[4]+r[5])+(r[6]+r[7]))
        while i<n: res+=a[i]; i+=1
        return res
    n2=n//2; n2-=n2%8
    return pairwise(a[:n2])+pairwise(a[n2:])
rng=np.random.default_rng(1)
for k in (5,8,9,20,50,130,300):
    A=rng.random((2000,k))*rng.choice([1,1e3,1e-3],size=(2000,k))
    s=A.sum(axis=1); m=A.mean(axis=1)
    a=np.array([r[0]+pairwise(list(r[1:])) for r in A]); b=np.array([pairwise(list(r)) for r in A])
    print(k,"first+pw(rest)",np.count_nonzero(a!=s),"pw(all)",np.count_nonzero(b!=s),"mean==pw(all)/k",np.count_nonzero(m!=b/k))
